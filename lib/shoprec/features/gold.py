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
from shoprec.config import ConfigError, FeaturesConfig

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
        raise ConfigError(
            f"features.split: valid_start {valid} is after test_start {test}; set valid_start on or before "
            "test_start, or leave both unset to hold out the last valid_days and test_days"
        )
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
        # a catalog without stock levels (stock unknown) keeps every item sellable
        F.coalesce(F.col(S.STOCK) > 0, F.lit(True)).alias(S.IN_STOCK),
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
        *S.RELATIONS,
    )


def _weight_map(df: DataFrame, value: Column, weight: Column, name: str) -> DataFrame:
    """Per user: ``{value: summed weight}`` over the rows where ``value`` is set."""
    sums = df.where(value.isNotNull()).groupBy(S.USER_KEY, value.alias("_k")).agg(F.sum(weight).alias("_w"))
    return sums.groupBy(S.USER_KEY).agg(F.map_from_entries(F.collect_list(F.struct("_k", "_w"))).alias(name))


def _empty_map(name: str) -> Column:
    return F.create_map().cast(S.GOLD_USER_STATE_SCHEMA[name].dataType)


def user_state(events: DataFrame, items: DataFrame, cfg: FeaturesConfig) -> DataFrame:
    """Per user, the additive aggregates a profile is made from (``GOLD_USER_STATE_SCHEMA``).

    Every field can be merged with the same field from later events (``merge_user_state``), so a
    new day updates profiles from the day's events and the stored state, not from all history.
    """
    inter = interactions(events, cfg).join(
        items.select(S.ITEM_ID, S.TOP_CATEGORY, S.BRAND, S.PRICE_BAND), S.ITEM_ID, "left"
    )
    weight = F.col(S.WEIGHT)
    terms = (
        events.where(F.col(S.QUERY).isNotNull())
        .select(S.USER_KEY, F.explode(_words(F.col(S.QUERY))).alias("_term"))
        .where((F.length("_term") > 2) & ~F.col("_term").isin(*STOP_WORDS))
    )
    review_sentiment = F.when(F.col(S.EVENT_TYPE) == S.REVIEW, sentiment(F.col(S.REVIEW_TEXT)))
    activity = events.groupBy(S.USER_KEY).agg(
        F.count(F.lit(1)).alias(S.EVENTS_COUNT),
        F.array_sort(F.collect_set(S.EVENT_DATE)).alias(S.ACTIVE_DATES),
        F.max(S.EVENT_TIME).alias(S.LAST_EVENT_TIME),
        F.sum(review_sentiment).alias(S.SENTIMENT_SUM),
        F.count(review_sentiment).alias(S.SENTIMENT_COUNT),
        F.array_sort(F.collect_set(S.INGEST_BATCH)).alias(S.BATCHES),
    )
    maps = (
        (_weight_map(inter, F.col(S.TOP_CATEGORY), weight, S.CATEGORY_WEIGHTS), S.CATEGORY_WEIGHTS),
        (_weight_map(inter, F.col(S.BRAND), weight, S.BRAND_WEIGHTS), S.BRAND_WEIGHTS),
        (_weight_map(inter, F.col(S.PRICE_BAND), weight, S.BAND_WEIGHTS), S.BAND_WEIGHTS),
        (_weight_map(terms, F.col("_term"), F.lit(1.0), S.TERM_COUNTS), S.TERM_COUNTS),
    )
    df = activity
    for m, name in maps:
        df = df.join(m, S.USER_KEY, "left").withColumn(name, F.coalesce(name, _empty_map(name)))
    return df.select(*S.GOLD_USER_STATE_SCHEMA.fieldNames())


def merge_user_state(old: DataFrame, new: DataFrame) -> DataFrame:
    """The state of both inputs combined, per user (a full outer join: either side may be missing)."""
    o, n = old.alias("o"), new.alias("n")

    def add_maps(name: str) -> Column:
        empty = _empty_map(name)
        return F.map_zip_with(
            F.coalesce(F.col(f"o.{name}"), empty),
            F.coalesce(F.col(f"n.{name}"), empty),
            lambda _k, a, b: F.coalesce(a, F.lit(0.0)) + F.coalesce(b, F.lit(0.0)),
        ).alias(name)

    def add(name: str) -> Column:
        return (F.coalesce(F.col(f"o.{name}"), F.lit(0)) + F.coalesce(F.col(f"n.{name}"), F.lit(0))).alias(
            name
        )

    def union(name: str) -> Column:
        empty = F.array().cast(S.GOLD_USER_STATE_SCHEMA[name].dataType)
        both = F.array_union(F.coalesce(F.col(f"o.{name}"), empty), F.coalesce(F.col(f"n.{name}"), empty))
        return F.array_sort(both).alias(name)

    sentiment_sum = F.when(
        F.col(f"o.{S.SENTIMENT_SUM}").isNotNull() | F.col(f"n.{S.SENTIMENT_SUM}").isNotNull(),
        F.coalesce(F.col(f"o.{S.SENTIMENT_SUM}"), F.lit(0.0))
        + F.coalesce(F.col(f"n.{S.SENTIMENT_SUM}"), F.lit(0.0)),
    ).alias(S.SENTIMENT_SUM)
    return o.join(n, F.col(f"o.{S.USER_KEY}") == F.col(f"n.{S.USER_KEY}"), "full_outer").select(
        F.coalesce(F.col(f"o.{S.USER_KEY}"), F.col(f"n.{S.USER_KEY}")).alias(S.USER_KEY),
        add(S.EVENTS_COUNT),
        union(S.ACTIVE_DATES),
        F.greatest(F.col(f"o.{S.LAST_EVENT_TIME}"), F.col(f"n.{S.LAST_EVENT_TIME}")).alias(S.LAST_EVENT_TIME),
        sentiment_sum,
        add(S.SENTIMENT_COUNT),
        union(S.BATCHES),
        add_maps(S.CATEGORY_WEIGHTS),
        add_maps(S.BRAND_WEIGHTS),
        add_maps(S.BAND_WEIGHTS),
        add_maps(S.TERM_COUNTS),
    )


def _top(m: Column, k: int, with_share: bool) -> Column:
    """The ``k`` heaviest entries of a weight map (ties by name), with each one's share of the total."""
    entries = F.array_sort(
        F.map_entries(m),
        lambda a, b: (
            F.when(a["value"] > b["value"], -1)
            .when(a["value"] < b["value"], 1)
            .when(a["key"] < b["key"], -1)
            .when(a["key"] > b["key"], 1)
            .otherwise(0)
        ),
    )
    top = F.slice(entries, 1, k)
    if not with_share:
        return F.transform(top, lambda e: e["key"])
    total = F.aggregate(F.map_values(m), F.lit(0.0), lambda acc, x: acc + x)
    return F.transform(
        top, lambda e: F.struct(e["key"].alias("name"), F.round(e["value"] / total, 4).alias(S.WEIGHT))
    )


def user_profiles(state: DataFrame, cfg: FeaturesConfig, split: str, as_of: datetime) -> DataFrame:
    """One row per user in ``state``: tastes as columns and as a sentence for the model."""
    df = state.select(
        S.USER_KEY,
        _top(F.col(S.CATEGORY_WEIGHTS), cfg.top_k, True).alias(S.TOP_CATEGORIES),
        _top(F.col(S.BRAND_WEIGHTS), cfg.top_k, True).alias(S.TOP_BRANDS),
        F.get(_top(F.col(S.BAND_WEIGHTS), 1, False), 0).alias(S.PRICE_BAND),
        S.EVENTS_COUNT,
        F.size(S.ACTIVE_DATES).cast("long").alias(S.ACTIVE_DAYS),
        (
            (F.lit(as_of).cast("timestamp").cast("double") - F.col(S.LAST_EVENT_TIME).cast("double"))
            / 86400.0
        ).alias(S.RECENCY_DAYS),
        F.when(F.col(S.SENTIMENT_COUNT) > 0, F.col(S.SENTIMENT_SUM) / F.col(S.SENTIMENT_COUNT)).alias(
            S.REVIEW_SENTIMENT
        ),
        _top(F.col(S.TERM_COUNTS), 2 * cfg.top_k, False).alias(S.SEARCH_KEYWORDS),
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
    return _last_n(
        interactions(events, cfg).select(S.USER_KEY, S.EVENT_TIME, S.EVENT_ID, S.ITEM_ID, S.EVENT_TYPE),
        cfg,
        split,
    )


def extend_sequences(old: DataFrame, new_events: DataFrame, cfg: FeaturesConfig, split: str) -> DataFrame:
    """The sequences of users with new events, extended by them (and only those users' rows).

    Exact, not an approximation: the last N of (history + new) are the last N of (last N of
    history + new). Entries are keyed by event id, so folding in the same events twice is harmless.
    """
    new = interactions(new_events, cfg).select(S.USER_KEY, S.EVENT_TIME, S.EVENT_ID, S.ITEM_ID, S.EVENT_TYPE)
    users = new.select(S.USER_KEY).distinct()
    kept = (
        old.join(users, S.USER_KEY, "left_semi")
        .select(
            S.USER_KEY, F.explode(F.arrays_zip(S.TIMES, S.EVENT_IDS, S.ITEMS, S.EVENT_TYPES_COL)).alias("_e")
        )
        .select(
            S.USER_KEY,
            F.col("_e")[S.TIMES].alias(S.EVENT_TIME),
            F.col("_e")[S.EVENT_IDS].alias(S.EVENT_ID),
            F.col("_e")[S.ITEMS].alias(S.ITEM_ID),
            F.col("_e")[S.EVENT_TYPES_COL].alias(S.EVENT_TYPE),
        )
    )
    return _last_n(kept.unionByName(new).dropDuplicates([S.USER_KEY, S.EVENT_ID]), cfg, split)


def _last_n(rows: DataFrame, cfg: FeaturesConfig, split: str) -> DataFrame:
    recent = rows.withColumn(
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
            F.col("_seq")[S.EVENT_ID].alias(S.EVENT_IDS),
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
