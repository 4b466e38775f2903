"""Gold tables as pure DataFrame transformations (reading and writing happen in ``features.job``).

Leakage is handled in one place: every silver event gets a ``period`` (train, valid or test), by a
global time cut or by each user's last positives (leave-last-out). Features for a split are built
only from the periods before it: train and valid from train events, test from train and valid,
serving from everything. Training examples take their history from strictly earlier events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import FeaturesConfig

PERIOD = "period"
#: Which periods each split's features may see.
VISIBLE: dict[str, tuple[str, ...]] = {
    S.TRAIN: (S.TRAIN,),
    S.VALID: (S.TRAIN,),
    S.TEST: (S.TRAIN, S.VALID),
    S.SERVING: (S.TRAIN, S.VALID, S.TEST),
}
POSITIVE_WORDS = (
    "love",
    "excellent",
    "great",
    "perfect",
    "perfectly",
    "recommend",
    "value",
    "exceeded",
    "good",
    "amazing",
    "happy",
    "best",
    "works",
    "sturdy",
    "comfortable",
    "nice",
    "fantastic",
    "awesome",
)
NEGATIVE_WORDS = (
    "disappointed",
    "broke",
    "poor",
    "bad",
    "waste",
    "not",
    "never",
    "terrible",
    "awful",
    "return",
    "returned",
    "cheap",
    "worst",
    "useless",
    "flimsy",
    "defective",
    "leaks",
)
STOP_WORDS = (
    "the",
    "a",
    "an",
    "and",
    "or",
    "for",
    "with",
    "of",
    "to",
    "in",
    "on",
    "my",
    "me",
    "best",
    "cheap",
)


@dataclass(frozen=True)
class Cuts:
    """The global cuts of ``time`` mode (``None`` in leave-last-out mode, where cuts are per user)."""

    valid_start: datetime | None
    test_start: datetime | None


def time_cuts(cfg: FeaturesConfig, last_event_date: datetime) -> Cuts:
    """The configured cuts, or: the last ``test_days`` days are test and the ``valid_days`` before, valid."""
    split = cfg.split
    if split.mode != "time":
        return Cuts(None, None)
    end = datetime(last_event_date.year, last_event_date.month, last_event_date.day) + timedelta(days=1)
    test = split.test_start or (end - timedelta(days=split.test_days)).date()
    valid = (
        split.valid_start
        or (datetime(test.year, test.month, test.day) - timedelta(days=split.valid_days)).date()
    )
    if valid > test:
        raise ValueError(f"features.split: valid_start {valid} is after test_start {test}")
    return Cuts(datetime(valid.year, valid.month, valid.day), datetime(test.year, test.month, test.day))


def with_periods(events: DataFrame, cfg: FeaturesConfig, cuts: Cuts) -> DataFrame:
    """Label every silver event train, valid or test."""
    t = F.col(S.EVENT_TIME)
    if cfg.split.mode == "time":
        assert cuts.valid_start is not None and cuts.test_start is not None
        period = (
            F.when(t >= F.lit(cuts.test_start), S.TEST)
            .when(t >= F.lit(cuts.valid_start), S.VALID)
            .otherwise(S.TRAIN)
        )
        return events.withColumn(PERIOD, period)
    # leave-last-out: the user's last positive is test, the one before valid (ranked, so ties split
    # cleanly); any other event takes the period of the latest held-out positive at or before it
    positive = F.col(S.EVENT_TYPE).isin(*cfg.positive_events) & F.col(S.ITEM_ID).isNotNull()
    by_user = Window.partitionBy(S.USER_KEY).orderBy(F.col(S.EVENT_TIME).desc(), F.col(S.EVENT_ID).desc())
    ranks = events.where(positive).select(
        S.EVENT_ID,
        S.USER_KEY,
        S.EVENT_TIME,
        F.row_number().over(by_user).alias("_r"),
        F.count(F.lit(1)).over(Window.partitionBy(S.USER_KEY)).alias("_n_pos"),
    )
    marks = ranks.groupBy(S.USER_KEY).agg(
        F.max(F.when(F.col("_r") == 1, F.col(S.EVENT_TIME))).alias("_t_test"),
        F.max(F.when(F.col("_r") == 2, F.col(S.EVENT_TIME))).alias("_t_valid"),
        F.max("_n_pos").alias("_n_pos"),
    )
    rank_of = ranks.select(S.EVENT_ID, F.col("_r"))
    held_out = F.col("_n_pos") >= 3  # users with fewer positives train only
    by_rank = F.when(F.col("_r") == 1, S.TEST).when(F.col("_r") == 2, S.VALID).otherwise(S.TRAIN)
    # at the same instant as a held-out positive (its review, say) belongs with it, not before it
    by_time = F.when(t >= F.col("_t_test"), S.TEST).when(t >= F.col("_t_valid"), S.VALID).otherwise(S.TRAIN)
    period = (
        F.when(~F.coalesce(held_out, F.lit(False)), S.TRAIN)
        .when(F.col("_r").isNotNull(), by_rank)
        .otherwise(by_time)
    )
    return (
        events.join(marks, S.USER_KEY, "left")
        .join(rank_of, S.EVENT_ID, "left")
        .withColumn(PERIOD, period)
        .drop("_t_test", "_t_valid", "_n_pos", "_r")
    )


def visible(events: DataFrame, split: str) -> DataFrame:
    return events.where(F.col(PERIOD).isin(*VISIBLE[split]))


def interactions(events: DataFrame, cfg: FeaturesConfig) -> DataFrame:
    """Every item event of silver with its configured weight (searches have no item: left out)."""
    weight: Column = F.lit(None).cast("double")
    for etype, w in cfg.event_weights.items():
        weight = F.when(F.col(S.EVENT_TYPE) == etype, F.lit(float(w))).otherwise(weight)
    return events.where(F.col(S.ITEM_ID).isNotNull() & weight.isNotNull()).select(
        S.EVENT_ID, S.USER_KEY, S.ITEM_ID, S.EVENT_TYPE, weight.alias(S.WEIGHT), S.EVENT_TIME, S.EVENT_DATE
    )


def _words(text: Column) -> Column:
    return F.split(F.trim(F.regexp_replace(F.lower(text), r"[^a-z0-9\- ]+", " ")), r"\s+")


def sentiment(text: Column) -> Column:
    """A lexicon score in [-1, 1]: (positive - negative) / (positive + negative) words; null if neither."""
    words = _words(text)
    pos = F.size(F.array_intersect(words, F.array(*[F.lit(w) for w in POSITIVE_WORDS])))
    neg = F.size(F.array_intersect(words, F.array(*[F.lit(w) for w in NEGATIVE_WORDS])))
    return F.when(pos + neg > 0, (pos - neg) / (pos + neg))


def item_features(
    catalog: DataFrame, events: DataFrame, cfg: FeaturesConfig, split: str, as_of: datetime
) -> DataFrame:
    """One row per clean catalog item: its text for the language model, and behaviour as of ``as_of``."""
    inter = interactions(events, cfg)
    counts = inter.groupBy(S.ITEM_ID).agg(
        *[
            F.sum(F.when(F.col(S.EVENT_TYPE) == t, 1).otherwise(0)).alias(c)
            for t, c in (
                (S.VIEW, S.VIEWS),
                (S.CLICK, S.CLICKS),
                (S.ADD_TO_CART, S.CARTS),
                (S.PURCHASE, S.PURCHASES),
            )
        ],
        F.sum(S.WEIGHT).alias("_weight"),
    )
    reviews = (
        events.where(F.col(S.EVENT_TYPE) == S.REVIEW)
        .groupBy(S.ITEM_ID)
        .agg(
            F.avg(S.RATING).alias(S.RATING_MEAN),
            F.count(S.RATING).alias(S.RATING_COUNT),
            F.avg(sentiment(F.col(S.REVIEW_TEXT))).alias(S.REVIEW_SENTIMENT),
        )
    )
    top = F.trim(F.split(S.CATEGORY_PATH, ">").getItem(0))
    band_rank = F.percent_rank().over(Window.partitionBy("_top").orderBy(S.PRICE))
    band = (
        F.when(F.col(S.PRICE).isNull(), "unknown")
        .when(band_rank < 1 / 3, S.PRICE_BANDS[0])
        .when(band_rank < 2 / 3, S.PRICE_BANDS[1])
        .otherwise(S.PRICE_BANDS[2])
    )
    short = F.when(
        F.length(S.DESCRIPTION) > 200, F.concat(F.substring(S.DESCRIPTION, 1, 197), F.lit("..."))
    ).otherwise(F.col(S.DESCRIPTION))
    zero = F.lit(0).cast("long")
    df = (
        catalog.withColumn("_top", top)
        .withColumn(S.PRICE_BAND, band)
        .join(counts, S.ITEM_ID, "left")
        .join(reviews, S.ITEM_ID, "left")
    )
    return df.select(
        F.lit(split).alias(S.SPLIT),
        F.lit(as_of).cast("timestamp").alias(S.AS_OF),
        S.ITEM_ID,
        S.TITLE,
        S.CATEGORY_PATH,
        F.col("_top").alias(S.TOP_CATEGORY),
        S.BRAND,
        S.PRICE,
        S.PRICE_BAND,
        short.alias(S.SHORT_DESCRIPTION),
        S.DISCOUNT_PCT,
        S.STOCK,
        F.coalesce(F.col(S.STOCK) > 0, F.lit(False)).alias(S.IN_STOCK),
        S.LAUNCH_DATE,
        *[
            F.coalesce(F.col(c).cast("long"), zero).alias(c)
            for c in (S.VIEWS, S.CLICKS, S.CARTS, S.PURCHASES)
        ],
        F.log1p(F.coalesce(F.col("_weight"), F.lit(0.0))).alias(S.POPULARITY),
        F.when(F.col(S.VIEWS) > 0, F.col(S.PURCHASES) / F.col(S.VIEWS)).alias(S.CONVERSION_RATE),
        S.RATING_MEAN,
        F.coalesce(F.col(S.RATING_COUNT), zero).alias(S.RATING_COUNT),
        S.REVIEW_SENTIMENT,
        F.concat_ws(
            " | ",
            S.TITLE,
            S.CATEGORY_PATH,
            S.BRAND,
            F.when(F.col(S.PRICE).isNotNull(), F.concat(S.PRICE_BAND, F.lit(" price"))),
            short,
        ).alias(S.ITEM_TEXT),
    )


def _top_weighted(df: DataFrame, key: str, value: Column, k: int, name: str) -> DataFrame:
    """Per ``key``: the top ``k`` values by summed weight, weights normalised to sum to 1."""
    sums = df.where(value.isNotNull()).groupBy(key, value.alias("_v")).agg(F.sum(S.WEIGHT).alias("_w"))
    ranked = sums.withColumn("_r", F.row_number().over(Window.partitionBy(key).orderBy(F.desc("_w"), "_v")))
    total = F.sum("_w").over(Window.partitionBy(key))
    top = ranked.withColumn("_share", F.round(F.col("_w") / total, 4)).where(F.col("_r") <= k)
    return top.groupBy(key).agg(
        F.transform(
            F.array_sort(F.collect_list(F.struct(F.col("_r"), F.col("_v"), F.col("_share")))),
            lambda s: F.struct(s["_v"].alias("name"), s["_share"].alias(S.WEIGHT)),
        ).alias(name)
    )


def user_profiles(
    events: DataFrame, items: DataFrame, cfg: FeaturesConfig, split: str, as_of: datetime
) -> DataFrame:
    """One row per user seen before ``as_of``: tastes as columns and as a sentence for the model."""
    inter = interactions(events, cfg).join(
        items.select(S.ITEM_ID, S.TOP_CATEGORY, S.BRAND, S.PRICE_BAND), S.ITEM_ID, "left"
    )
    cats = _top_weighted(inter, S.USER_KEY, F.col(S.TOP_CATEGORY), cfg.top_k, S.TOP_CATEGORIES)
    brands = _top_weighted(inter, S.USER_KEY, F.col(S.BRAND), cfg.top_k, S.TOP_BRANDS)
    band = _top_weighted(inter, S.USER_KEY, F.col(S.PRICE_BAND), 1, "_band").select(
        S.USER_KEY, F.col("_band")[0]["name"].alias(S.PRICE_BAND)
    )
    activity = events.groupBy(S.USER_KEY).agg(
        F.count(F.lit(1)).alias(S.EVENTS_COUNT),
        F.countDistinct(S.EVENT_DATE).alias(S.ACTIVE_DAYS),
        (
            (F.lit(as_of).cast("timestamp").cast("double") - F.max(S.EVENT_TIME).cast("double")) / 86400.0
        ).alias(S.RECENCY_DAYS),
        F.avg(F.when(F.col(S.EVENT_TYPE) == S.REVIEW, sentiment(F.col(S.REVIEW_TEXT)))).alias(
            S.REVIEW_SENTIMENT
        ),
    )
    terms = (
        events.where(F.col(S.QUERY).isNotNull())
        .select(S.USER_KEY, F.explode(_words(F.col(S.QUERY))).alias("_term"))
        .where((F.length("_term") > 2) & ~F.col("_term").isin(*STOP_WORDS))
        .groupBy(S.USER_KEY, "_term")
        .count()
        .withColumn(
            "_r", F.row_number().over(Window.partitionBy(S.USER_KEY).orderBy(F.desc("count"), "_term"))
        )
        .where(F.col("_r") <= 2 * cfg.top_k)
        .groupBy(S.USER_KEY)
        .agg(
            F.transform(F.array_sort(F.collect_list(F.struct("_r", "_term"))), lambda s: s["_term"]).alias(
                S.SEARCH_KEYWORDS
            )
        )
    )
    empty_weighted = F.array().cast(S.GOLD_USER_PROFILE_SCHEMA[S.TOP_CATEGORIES].dataType)
    df = (
        activity.join(cats, S.USER_KEY, "left")
        .join(brands, S.USER_KEY, "left")
        .join(band, S.USER_KEY, "left")
        .join(terms, S.USER_KEY, "left")
        .withColumn(S.TOP_CATEGORIES, F.coalesce(S.TOP_CATEGORIES, empty_weighted))
        .withColumn(S.TOP_BRANDS, F.coalesce(S.TOP_BRANDS, empty_weighted))
        .withColumn(S.SEARCH_KEYWORDS, F.coalesce(S.SEARCH_KEYWORDS, F.array().cast("array<string>")))
    )

    def names(c: str) -> Column:
        return F.array_join(F.transform(F.col(c), lambda s: s["name"]), ", ")

    text = F.concat_ws(
        "; ",
        F.when(F.size(S.TOP_CATEGORIES) > 0, F.concat(F.lit("likes "), names(S.TOP_CATEGORIES))),
        F.when(F.size(S.TOP_BRANDS) > 0, F.concat(F.lit("brands "), names(S.TOP_BRANDS))),
        F.when(F.col(S.PRICE_BAND).isNotNull(), F.concat(F.col(S.PRICE_BAND), F.lit(" prices"))),
        F.when(
            F.size(S.SEARCH_KEYWORDS) > 0, F.concat(F.lit("searches "), F.array_join(S.SEARCH_KEYWORDS, ", "))
        ),
    )
    return df.select(
        F.lit(split).alias(S.SPLIT),
        F.lit(as_of).cast("timestamp").alias(S.AS_OF),
        S.USER_KEY,
        S.TOP_CATEGORIES,
        S.TOP_BRANDS,
        S.PRICE_BAND,
        S.EVENTS_COUNT,
        S.ACTIVE_DAYS,
        S.RECENCY_DAYS,
        S.REVIEW_SENTIMENT,
        S.SEARCH_KEYWORDS,
        text.alias(S.PROFILE_TEXT),
    )


def sequences(events: DataFrame, cfg: FeaturesConfig, split: str) -> DataFrame:
    """Per user, the last ``history_length`` item events in time order."""
    inter = interactions(events, cfg)
    recent = inter.withColumn(
        "_r",
        F.row_number().over(Window.partitionBy(S.USER_KEY).orderBy(F.desc(S.EVENT_TIME), F.desc(S.EVENT_ID))),
    ).where(F.col("_r") <= cfg.history_length)
    ordered = F.array_sort(F.collect_list(F.struct(S.EVENT_TIME, S.EVENT_ID, S.ITEM_ID, S.EVENT_TYPE)))
    return (
        recent.groupBy(S.USER_KEY)
        .agg(ordered.alias("_seq"))
        .select(
            F.lit(split).alias(S.SPLIT),
            S.USER_KEY,
            F.col("_seq")[S.ITEM_ID].alias(S.ITEMS),
            F.col("_seq")[S.EVENT_TYPE].alias(S.EVENT_TYPES_COL),
            F.col("_seq")[S.EVENT_TIME].alias(S.TIMES),
        )
    )


def training_examples(events: DataFrame, catalog_items: DataFrame, cfg: FeaturesConfig) -> DataFrame:
    """(history → next positive item) with sampled negatives, one row per positive event.

    The history is the user's previous ``history_length`` item events, strictly before the target.
    Negatives are drawn from the catalog by a hash of (seed, user, target, slot), so they are the
    same on every run however Spark partitions the work; the positive itself is never a negative.
    """
    inter = interactions(events, cfg).join(events.select(S.EVENT_ID, PERIOD), S.EVENT_ID)
    n = cfg.history_length
    before = Window.partitionBy(S.USER_KEY).orderBy(S.EVENT_TIME, S.EVENT_ID).rowsBetween(-n, -1)
    hist = F.collect_list(F.struct(S.EVENT_TIME, S.ITEM_ID, S.EVENT_TYPE)).over(before)
    with_hist = inter.withColumn("_hist", hist).where(
        F.col(S.EVENT_TYPE).isin(*cfg.positive_events) & (F.size("_hist") > 0)
    )
    items = (
        catalog_items.select(S.ITEM_ID).distinct().agg(F.sort_array(F.collect_list(S.ITEM_ID)).alias("_all"))
    )
    k_train, k_eval = cfg.train_negatives, cfg.eval_negatives
    slots = F.when(F.col(PERIOD) == S.TRAIN, k_train).otherwise(k_eval)
    pool = F.size("_all")
    draw = F.transform(
        F.sequence(F.lit(0), 2 * slots + 8),
        lambda i: F.element_at(
            "_all",
            (F.pmod(F.xxhash64(F.lit(cfg.seed), S.USER_KEY, S.EVENT_ID, i), pool) + 1).cast("int"),
        ),
    )
    negatives = F.slice(F.array_distinct(F.filter(draw, lambda x: x != F.col(S.ITEM_ID))), 1, slots)
    return with_hist.crossJoin(F.broadcast(items)).select(
        F.col(PERIOD).alias(S.SPLIT),
        S.USER_KEY,
        F.col(S.EVENT_TIME).alias(S.TARGET_TIME),
        F.col("_hist")[S.ITEM_ID].alias(S.HISTORY_ITEMS),
        F.col("_hist")[S.EVENT_TYPE].alias(S.HISTORY_TYPES),
        F.col(S.ITEM_ID).alias(S.POSITIVE_ITEM),
        S.EVENT_TYPE,
        F.when(slots > 0, negatives).otherwise(F.array().cast("array<string>")).alias(S.NEGATIVE_ITEMS),
    )
