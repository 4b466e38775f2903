"""Why an item is on a list: each served row's ``reason`` (:data:`shoprec.schemas.REASON_SCHEMA`).

The kind is what the ranker itself credits most for the item: the learning-to-rank model's SHAP
contributions (LightGBM's ``pred_contrib``), summed over the features of each kind below, the
largest positive sum winning. Where the torch head ranks, or no kind raised the item's score, it
is the candidate source that proposed the item (the most specific one, in :data:`SOURCE_ORDER`).

The history item is then the user's own recent item the kind refers to: the most similar by the
retriever's item vectors (``similar_to_history``), the one the item co-occurs with most, decayed
by recency as the ranker's co-occurrence feature is (``bought_together``), the most recent one the
catalog links it with (``goes_with`` / ``alternative_to``), the item itself (``seen_before``).
The sentence names that item's title, or the item's category for the category kinds.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.modeling import candidates as C
from shoprec.modeling import ltr

SIMILAR, TOGETHER, LINKED, SHOPPERS = "similar_to_history", "bought_together", "linked", "similar_shoppers"
TASTE, POPULAR, TRENDING, NEW = "your_categories", "popular_in_category", "trending", "new_in_category"
SEEN, PRICE, ON_SALE, RATED = "seen_before", "your_price_range", "on_sale", "well_rated"
#: The staged candidates' column holding the ranker's credited kind (null where it credited none).
KIND_COLUMN = "reason_kind"
#: ``linked`` resolves to one of these by the link found (a complement, or a substitute).
GOES_WITH, ALTERNATIVE = "goes_with", "alternative_to"


def _source(name: str) -> tuple[str, str]:
    return ltr.score_column(name), ltr.rank_column(name)


#: Each kind's ranker features (:func:`shoprec.modeling.ltr.feature_names`).
KIND_FEATURES: dict[str, tuple[str, ...]] = {
    SIMILAR: (*_source(C.EMBEDDING), *_source(C.SEQUENCE), ltr.EMBEDDING_DOT, ltr.SEQUENCE_DOT),
    TOGETHER: (*_source(C.COOCCURRENCE), ltr.COOC_SUM, ltr.COOC_MAX, ltr.COOC_LAST),
    LINKED: (
        *_source(C.RELATED),
        ltr.COMPLEMENT_SUM,
        ltr.COMPLEMENT_LAST,
        ltr.SUBSTITUTE_SUM,
        ltr.SUBSTITUTE_LAST,
        ltr.RELATED_BACK,
    ),
    SHOPPERS: (*_source(C.ALS), ltr.ALS_DOT),
    TASTE: (
        *_source(C.CATEGORY),
        ltr.LEAF_AFFINITY,
        ltr.LEAF_RECENCY,
        ltr.LEAF_ITEM_SHARE,
        ltr.BRAND_SHARE,
        ltr.TASTE,
        "category_affinity",
        "brand_affinity",
    ),
    POPULAR: (*_source(C.POPULAR), ltr.SEEN_POPULARITY, "log_popularity", "conversion_rate"),
    TRENDING: (ltr.RECENT_POPULARITY,),
    NEW: _source(C.NEW_ITEM),
    SEEN: (*_source(C.RECENT), ltr.USER_ITEM_WEIGHT, ltr.USER_ITEM_POSITIVE, ltr.USER_ITEM_RECENCY),
    PRICE: ("price_band_gap", "price_band_known", "log_price"),
    ON_SALE: ("discount",),
    RATED: ("rating_mean", "has_rating", "log_rating_count"),
}
#: Features no sentence can honestly stand on: they say how much is known, not why this item.
UNEXPLAINED = frozenset({ltr.N_SOURCES, ltr.HISTORY_LENGTH, "in_stock"})
#: Without the ranker's credit: the most specific source that proposed the item names its kind.
SOURCE_ORDER: tuple[tuple[str, str], ...] = (
    (C.COOCCURRENCE, TOGETHER),
    (C.RELATED, LINKED),
    (C.SEQUENCE, SIMILAR),
    (C.EMBEDDING, SIMILAR),
    (C.RECENT, SEEN),
    (C.ALS, SHOPPERS),
    (C.CATEGORY, TASTE),
    (C.NEW_ITEM, NEW),
    (C.POPULAR, POPULAR),
)
KINDS: tuple[str, ...] = tuple(KIND_FEATURES)
_TITLE_CHARS = 60


def groups(names: Sequence[str]) -> list[list[int]]:
    """:data:`KINDS`' feature indices in ``names`` (a model's features), for
    :func:`shoprec.modeling.ltr.predict_frame`; a kind whose features the model lacks is empty."""
    where = {n: i for i, n in enumerate(names)}
    return [[where[f] for f in KIND_FEATURES[k] if f in where] for k in KINDS]


def kind_of_group(group: Column) -> Column:
    """``top_group`` (an index into :data:`KINDS`, -1 for none) → the kind, null for none."""
    return F.when(group >= 0, F.element_at(F.array(*[F.lit(k) for k in KINDS]), group + 1))


def kind_of_source(source: Column) -> Column:
    """The kind the most specific of a candidate's sources (``a+b``) stands for."""
    names = F.split(source, r"\+")
    out = F.lit(POPULAR)
    for name, kind in reversed(SOURCE_ORDER):
        out = F.when(F.array_contains(names, name), F.lit(kind)).otherwise(out)
    return out


def _short(title: Column) -> Column:
    return F.when(
        F.length(title) > _TITLE_CHARS, F.concat(F.substring(title, 1, _TITLE_CHARS - 1), F.lit("…"))
    ).otherwise(title)


def _history(
    lists: DataFrame, recent: DataFrame, vectors: DataFrame, pairs: DataFrame, linked: DataFrame, decay: float
) -> DataFrame:
    """``(user_key, item_id, history_item, relation)``: the recent item each row's kind refers to."""
    hist = lists.join(recent.select(S.USER_KEY, F.col(S.ITEM_ID).alias("_h"), "recency"), S.USER_KEY).where(
        F.col("_h") != F.col(S.ITEM_ID)
    )
    weight = F.pow(F.lit(decay), F.col("recency"))
    vec = vectors.select(S.ITEM_ID, "vector")
    none = F.lit(None).cast("string").alias("_rel")
    similar = (
        hist.where(F.col("_kind") == SIMILAR)
        .join(vec.withColumnRenamed("vector", "_iv"), S.ITEM_ID)
        .join(vec.select(F.col(S.ITEM_ID).alias("_h"), F.col("vector").alias("_hv")), "_h")
        .select(S.USER_KEY, S.ITEM_ID, "_h", "recency", ltr.dot(F.col("_iv"), F.col("_hv")).alias("_w"), none)
    )
    cooc = pairs.select(F.col(S.ITEM_ID).alias("_h"), F.col("other").alias(S.ITEM_ID), "cooc")
    together = (
        hist.where(F.col("_kind") == TOGETHER)
        .join(cooc, ["_h", S.ITEM_ID])
        .select(S.USER_KEY, S.ITEM_ID, "_h", "recency", (F.col("cooc") * weight).alias("_w"), none)
    )
    # a link either way: the recent item's page names the item, or the item's names the recent one
    either = linked.select(
        F.col(S.ITEM_ID).alias("_h"), F.col("other").alias(S.ITEM_ID), "relation"
    ).unionByName(linked.select(F.col("other").alias("_h"), S.ITEM_ID, "relation"))
    link = (
        hist.where(F.col("_kind") == LINKED)
        .join(either, ["_h", S.ITEM_ID])
        .select(S.USER_KEY, S.ITEM_ID, "_h", "recency", weight.alias("_w"), F.col("relation").alias("_rel"))
    )
    best = Window.partitionBy(S.USER_KEY, S.ITEM_ID).orderBy(F.desc("_w"), "recency", "_h")
    return (
        similar.unionByName(together)
        .unionByName(link)
        .withColumn("_n", F.row_number().over(best))
        .where(F.col("_n") == 1)
        .select(S.USER_KEY, S.ITEM_ID, "_h", "_rel")
    )


def explain(
    lists: DataFrame,
    kinds: DataFrame,
    items: DataFrame,
    recent: DataFrame,
    item_vectors: DataFrame,
    pairs: DataFrame,
    linked: DataFrame,
    decay: float,
) -> DataFrame:
    """``lists`` (user_key, item_id, source, ...) with ``reason``. ``kinds`` holds
    ``(user_key, item_id, reason_kind)`` (:data:`KIND_COLUMN`) from the ranker, null where it
    credited none; ``items`` is the catalog the lists came from; the rest is what generating the
    candidates computed (:class:`shoprec.modeling.candidates.Signals`): the users' recent items
    (``recency`` 0 = newest), the retriever's item vectors, co-occurrence pairs and catalog links."""
    base = lists.join(kinds, [S.USER_KEY, S.ITEM_ID], "left").withColumn(
        "_kind", F.coalesce(F.col(KIND_COLUMN), kind_of_source(F.col(S.SOURCE)))
    )
    found = _history(base.select(S.USER_KEY, S.ITEM_ID, "_kind"), recent, item_vectors, pairs, linked, decay)
    titles = items.select(F.col(S.ITEM_ID).alias("_h"), _short(F.col(S.TITLE)).alias("_ht"))
    own = items.select(
        S.ITEM_ID,
        F.col(S.TOP_CATEGORY).alias("_top"),
        F.element_at(F.split(F.col(S.CATEGORY_PATH), r"\s*>\s*"), -1).alias("_leaf"),
    )
    df = (
        base.join(found, [S.USER_KEY, S.ITEM_ID], "left")
        .join(titles, "_h", "left")
        .join(own, S.ITEM_ID, "left")
    )
    kind = F.col("_kind")
    seen = kind == SEEN
    kind = (
        F.when((kind == LINKED) & (F.col("_rel") == S.SUBSTITUTES), F.lit(ALTERNATIVE))
        .when(kind == LINKED, F.lit(GOES_WITH))
        .otherwise(kind)
    )
    history = F.when(seen, F.col(S.ITEM_ID)).otherwise(F.col("_h"))
    named = F.col("_ht").isNotNull()
    top = F.coalesce(F.col("_top"), F.lit("the shop"))
    leaf = F.coalesce(F.col("_leaf"), top)
    text = (
        F.when((kind == SIMILAR) & named, F.concat(F.lit("Because you viewed "), F.col("_ht")))
        .when(kind == SIMILAR, F.lit("Like items you viewed"))
        .when((kind == TOGETHER) & named, F.concat(F.lit("Often chosen together with "), F.col("_ht")))
        .when(kind == TOGETHER, F.lit("Often chosen with items you viewed"))
        .when((kind == GOES_WITH) & named, F.concat(F.lit("Goes with "), F.col("_ht")))
        .when((kind == ALTERNATIVE) & named, F.concat(F.lit("An alternative to "), F.col("_ht")))
        .when(kind.isin(GOES_WITH, ALTERNATIVE), F.lit("Goes with items you viewed"))
        .when(seen, F.lit("You viewed it recently"))
        .when(kind == SHOPPERS, F.lit("Shoppers with tastes like yours chose it"))
        .when(kind == TASTE, F.concat(F.lit("Because you shop "), leaf))
        .when(kind == POPULAR, F.concat(F.lit("Popular in "), top))
        .when(kind == TRENDING, F.concat(F.lit("Trending in "), top))
        .when(kind == NEW, F.concat(F.lit("New in "), top))
        .when(kind == PRICE, F.lit("In your usual price range"))
        .when(kind == ON_SALE, F.lit("On sale now"))
        .otherwise(F.lit("Highly rated"))
    )
    reason = F.struct(
        kind.alias(S.REASON_KIND),
        history.alias(S.REASON_ITEM),
        F.coalesce(text, F.lit("")).alias(S.REASON_TEXT),
    ).cast(S.REASON_SCHEMA)
    return df.select(*lists.columns, reason.alias(S.REASON))
