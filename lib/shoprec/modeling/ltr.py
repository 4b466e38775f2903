"""Learning to rank over the union of candidate sources: features in Spark, LightGBM LambdaRank.

The ranker orders every candidate a user has, whichever source proposed it, from what each source
knows about the pair and what the shop knows about the item:

- each source's score and rank (missing when the source did not propose the item: the trees learn
  what an absence means, e.g. "not in ALS's top 50");
- how many sources proposed it;
- item-to-item co-occurrence against the user's recent items (:func:`cooccurrence`): the sum
  over the recent items with a recency decay, the best match, and the match with the last item;
- ALS's and the retriever's dot products for *every* candidate, not only their own top-K;
- the head's pair and item features (:data:`shoprec.modeling.ranker.FEATURE_NAMES`: price band
  gap, popularity, category and brand affinity, ratings, conversion, discount, stock, price);
- the user's history length, and the user's own past with the item (summed event weights, its
  position among the user's recent items);
- the item's popularity in what the cut could see, overall and over its last ``recent_days``.

It is trained listwise (LambdaRank, NDCG@10) on lists the candidate generator makes at the
validation cut, labelled with the validation split's held-out positives, so training sees the
lists serving will. LightGBM is the field's standard learning-to-rank library (and has a Spark
integration for clusters). The model is a few boosters fitted on folds of the users and averaged
(:func:`fit_folds`), each a text file any LightGBM reads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, IntegerType, StringType, StructField, StructType

from shoprec import schemas as S
from shoprec.modeling import ranker as rk

log = logging.getLogger(__name__)

LTR_FILE, LTR_META = "ltr.txt", "ltr.json"
#: Under the ranker directory: the model for ranking a given set (``lightgbm.given_negatives``).
GIVEN_DIR = "given"
LTR_SCORE = "ltr_score"
#: :func:`predict_frame`'s column naming the feature group credited most for a row's score.
TOP_GROUP = "top_group"
COOC_SUM, COOC_MAX, COOC_LAST = "cooc_sum", "cooc_max", "cooc_last"
ALS_DOT, EMBEDDING_DOT, HISTORY_LENGTH, N_SOURCES = "als_dot", "embedding_dot", "history_length", "n_sources"
SEQUENCE_DOT = "sequence_dot"
USER_ITEM_WEIGHT, USER_ITEM_RECENCY = "user_item_weight", "user_item_recency"
USER_ITEM_POSITIVE = "user_item_positive"
SEEN_POPULARITY, RECENT_POPULARITY = "seen_popularity", "recent_popularity"
LEAF_AFFINITY, LEAF_RECENCY, LEAF_ITEM_SHARE = "leaf_affinity", "leaf_recency_days", "leaf_item_share"
BRAND_SHARE, TASTE = "brand_share", "taste"
COMPLEMENT_SUM, COMPLEMENT_LAST = "complement_sum", "complement_last"
SUBSTITUTE_SUM, SUBSTITUTE_LAST = "substitute_sum", "substitute_last"
RELATED_BACK, RELATED_SCORE = "related_back", "related_score"
#: Per relation kind of the catalog (:data:`shoprec.schemas.RELATIONS`): its decayed sum over
#: the user's recent items, and whether the newest one links to the item.
_RELATION_COLUMNS = {
    S.COMPLEMENTS: (COMPLEMENT_SUM, COMPLEMENT_LAST),
    S.SUBSTITUTES: (SUBSTITUTE_SUM, SUBSTITUTE_LAST),
}
#: Marks the users held out of every ranker's fit (by a hash of the pseudonymous key, the same
#: users in every run): the objective and the ranker kind are chosen on them, and promotion
#: compares versions on them.
HELD = "held_out"


def held_out(user: Column, share: float) -> Column:
    """True for the share of users no ranking model is fitted on. A fixed hash, not a random draw:
    a champion trained last month never saw this month's held-out users' lists either, so
    comparing it with a new version on them is fair to both."""
    return F.pmod(F.xxhash64(user), F.lit(1000)) < F.lit(round(share * 1000))


def score_column(source: str) -> str:
    return f"{source}_score"


def rank_column(source: str) -> str:
    return f"{source}_rank"


def feature_names(sources: Sequence[str]) -> list[str]:
    """The model's inputs, in order (stored with the model and checked when it is loaded)."""
    per_source = [c for s in sources for c in (score_column(s), rank_column(s))]
    return [
        *per_source,
        N_SOURCES,
        COOC_SUM,
        COOC_MAX,
        COOC_LAST,
        ALS_DOT,
        EMBEDDING_DOT,
        SEQUENCE_DOT,
        HISTORY_LENGTH,
        USER_ITEM_WEIGHT,
        USER_ITEM_POSITIVE,
        USER_ITEM_RECENCY,
        SEEN_POPULARITY,
        RECENT_POPULARITY,
        LEAF_AFFINITY,
        LEAF_RECENCY,
        LEAF_ITEM_SHARE,
        BRAND_SHARE,
        TASTE,
        COMPLEMENT_SUM,
        COMPLEMENT_LAST,
        SUBSTITUTE_SUM,
        SUBSTITUTE_LAST,
        RELATED_BACK,
        *rk.FEATURE_NAMES,
    ]


def dot(a: Column, b: Column) -> Column:
    """The dot product of two equal-length float arrays (null if either is)."""
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)


def recent_items(interactions: DataFrame, n: int) -> DataFrame:
    """``(user_key, item_id, recency)``: each user's ``n`` most recent distinct items, 0 = newest."""
    last = interactions.groupBy(S.USER_KEY, S.ITEM_ID).agg(F.max(S.EVENT_TIME).alias("_t"))
    order = Window.partitionBy(S.USER_KEY).orderBy(F.desc("_t"), S.ITEM_ID)
    return (
        last.withColumn("recency", F.row_number().over(order) - 1)
        .where(F.col("recency") < n)
        .select(S.USER_KEY, S.ITEM_ID, "recency")
    )


def user_items(interactions: DataFrame, positive_events: Sequence[str]) -> DataFrame:
    """``(user_key, item_id, user_item_weight, user_item_positive)``: each user's summed event
    weights per item, and 1 where one of them was a positive event (what the target, new items
    only, excludes; the weight alone cannot tell many views from one click)."""
    positive = F.col(S.EVENT_TYPE).isin(*positive_events).cast("double")
    return interactions.groupBy(S.USER_KEY, S.ITEM_ID).agg(
        F.sum(S.WEIGHT).alias(USER_ITEM_WEIGHT), F.max(positive).alias(USER_ITEM_POSITIVE)
    )


def item_popularity(interactions: DataFrame, recent_days: int) -> DataFrame:
    """``(item_id, seen_popularity, recent_popularity)``: log summed weights over everything the
    cut sees and over its last ``recent_days`` (the trend a static count misses)."""
    stamped = interactions.select(S.ITEM_ID, S.WEIGHT, S.EVENT_TIME)
    cut = stamped.agg(F.max(S.EVENT_TIME).alias("_last"))
    return (
        stamped.crossJoin(F.broadcast(cut))
        .groupBy(S.ITEM_ID)
        .agg(
            F.log1p(F.sum(S.WEIGHT)).alias(SEEN_POPULARITY),
            F.log1p(
                F.sum(
                    F.when(
                        F.col(S.EVENT_TIME) >= F.col("_last") - F.expr(f"INTERVAL {int(recent_days)} DAYS"),
                        F.col(S.WEIGHT),
                    ).otherwise(0.0)
                )
            ).alias(RECENT_POPULARITY),
        )
    )


def taste_score() -> Column:
    """:data:`TASTE`: the user's share of the item's category × the item's share of that category."""
    return F.col(LEAF_AFFINITY) * F.col(LEAF_ITEM_SHARE)


@dataclass(frozen=True)
class Tastes:
    """What a user's history says about the item's own category and brand, at full resolution.

    The profiles' affinities look at the top-level category and the user's top few brands; a
    shop's behaviour usually concentrates much finer (a user buys printer ink, not "office"), so
    the ranker also reads the user's share of the item's full category path and of its brand,
    how long ago the user last touched that category, and the item's share of its category's
    interactions (popularity where the user shops, not over the whole shop)."""

    leaves: DataFrame  # (user_key, category_path, leaf_affinity, leaf_recency_days)
    brands: DataFrame  # (user_key, brand, brand_share)
    items: DataFrame  # (item_id, category_path, brand, leaf_item_share)

    def checkpointed(self) -> Tastes:
        """The three frames computed once (the candidate source and the features both read them)."""
        return Tastes(
            self.leaves.localCheckpoint(), self.brands.localCheckpoint(), self.items.localCheckpoint()
        )

    def top(self, k: int) -> DataFrame:
        """``(user_key, item_id, score, rank)``: each user's ``k`` best items by :data:`TASTE`
        (the user's share of the category × the item's share of it). Each category offers only
        its own top ``k`` items, so the join stays users × their categories × ``k``."""
        per_leaf = Window.partitionBy(S.CATEGORY_PATH).orderBy(F.desc(LEAF_ITEM_SHARE), S.ITEM_ID)
        best = (
            self.items.where(F.col(LEAF_ITEM_SHARE) > 0)
            .withColumn("_r", F.row_number().over(per_leaf))
            .where(F.col("_r") <= k)
            .select(S.CATEGORY_PATH, S.ITEM_ID, LEAF_ITEM_SHARE)
        )
        scored = self.leaves.join(best, S.CATEGORY_PATH).select(
            S.USER_KEY, S.ITEM_ID, taste_score().alias(S.SCORE)
        )
        order = Window.partitionBy(S.USER_KEY).orderBy(F.desc(S.SCORE), S.ITEM_ID)
        return scored.withColumn(S.RANK, F.row_number().over(order)).where(F.col(S.RANK) <= k)


def item_shares(interactions: DataFrame, items: DataFrame) -> DataFrame:
    """``(item_id, category_path, brand, leaf_item_share)``: each item's share of its category's
    interaction weight, over every user's ``interactions`` (catalog-wide, the same for every user:
    a caller scoring a few users at a time computes it once, :class:`shoprec.modeling.candidates.Shared`)."""
    catalog = items.select(S.ITEM_ID, S.CATEGORY_PATH, S.BRAND)
    weight = interactions.groupBy(S.ITEM_ID).agg(F.sum(S.WEIGHT).alias("_w"))
    in_leaf = Window.partitionBy(S.CATEGORY_PATH)
    return catalog.join(weight, S.ITEM_ID, "left").select(
        S.ITEM_ID,
        S.CATEGORY_PATH,
        S.BRAND,
        F.coalesce(F.col("_w") / F.sum("_w").over(in_leaf), F.lit(0.0)).alias(LEAF_ITEM_SHARE),
    )


def latest(interactions: DataFrame) -> DataFrame:
    """One row, ``_cut``: the newest interaction's time, what recency is counted back from."""
    return interactions.agg(F.max(S.EVENT_TIME).alias("_cut"))


def tastes(
    mine: DataFrame,
    interactions: DataFrame,
    items: DataFrame,
    shares: DataFrame | None = None,
    cut: DataFrame | None = None,
) -> Tastes:
    """:class:`Tastes` from the users' own interactions (``mine``), everyone's (``interactions``,
    for the items' shares) and the catalog (``items``: item_id, category_path, brand).
    ``shares`` (:func:`item_shares`) and ``cut`` (:func:`latest`), when a caller keeps them,
    spare two scans of every interaction; a kept cut older than the users' own newest event
    gives way to it, so a category touched just now is 0 days old, never less."""
    catalog = items.select(S.ITEM_ID, S.CATEGORY_PATH, S.BRAND)
    if cut is None:
        cut = latest(interactions)
    else:
        cut = cut.crossJoin(latest(mine).withColumnRenamed("_cut", "_mine")).select(
            F.greatest("_cut", "_mine").alias("_cut")
        )
    own = mine.join(catalog, S.ITEM_ID).select(S.USER_KEY, S.CATEGORY_PATH, S.BRAND, S.WEIGHT, S.EVENT_TIME)
    total = Window.partitionBy(S.USER_KEY)
    leaves = (
        own.groupBy(S.USER_KEY, S.CATEGORY_PATH)
        .agg(F.sum(S.WEIGHT).alias("_w"), F.max(S.EVENT_TIME).alias("_t"))
        .crossJoin(F.broadcast(cut))
        .select(
            S.USER_KEY,
            S.CATEGORY_PATH,
            (F.col("_w") / F.sum("_w").over(total)).alias(LEAF_AFFINITY),
            ((F.unix_timestamp("_cut") - F.unix_timestamp("_t")) / 86400.0).alias(LEAF_RECENCY),
        )
    )
    brands = (
        own.where(F.col(S.BRAND).isNotNull())
        .groupBy(S.USER_KEY, S.BRAND)
        .agg(F.sum(S.WEIGHT).alias("_w"))
        .select(S.USER_KEY, S.BRAND, (F.col("_w") / F.sum("_w").over(total)).alias(BRAND_SHARE))
    )
    if shares is None:
        shares = item_shares(interactions, items)
    return Tastes(leaves, brands, shares)


def cooccurrence(interactions: DataFrame, window: int, neighbours: int) -> DataFrame:
    """``(item_id, other, cooc)``: how often two items appear within ``window`` positions of each
    other in users' histories (each pair weighted 1 / distance), normalised by both items' counts
    (a cosine, so popular items do not co-occur with everything), the top ``neighbours`` per item.

    Computed in Spark per user, then aggregated: bought-together and viewed-together in one."""
    distinct = interactions.groupBy(S.USER_KEY, S.ITEM_ID).agg(F.min(S.EVENT_TIME).alias("_t"))
    pos = distinct.withColumn(
        "_p", F.row_number().over(Window.partitionBy(S.USER_KEY).orderBy("_t", S.ITEM_ID))
    )
    a = pos.select(S.USER_KEY, F.col(S.ITEM_ID).alias("_a"), F.col("_p").alias("_pa"))
    b = pos.select(S.USER_KEY, F.col(S.ITEM_ID).alias("_b"), F.col("_p").alias("_pb"))
    gap = F.abs(F.col("_pa") - F.col("_pb"))
    pairs = (
        a.join(b, S.USER_KEY)
        .where((gap > 0) & (gap <= window))
        .groupBy("_a", "_b")
        .agg(F.sum(1.0 / gap).alias("_w"))
    )
    counts = distinct.groupBy(S.ITEM_ID).agg(F.count(F.lit(1)).cast("double").alias("_n"))
    ca = counts.select(F.col(S.ITEM_ID).alias("_a"), F.col("_n").alias("_na"))
    cb = counts.select(F.col(S.ITEM_ID).alias("_b"), F.col("_n").alias("_nb"))
    scored = (
        pairs.join(ca, "_a")
        .join(cb, "_b")
        .select(
            F.col("_a").alias(S.ITEM_ID),
            F.col("_b").alias("other"),
            (F.col("_w") / F.sqrt(F.col("_na") * F.col("_nb"))).alias("cooc"),
        )
    )
    best = Window.partitionBy(S.ITEM_ID).orderBy(F.desc("cooc"), "other")
    return scored.withColumn("_r", F.row_number().over(best)).where(F.col("_r") <= neighbours).drop("_r")


def cooc_scores(recent: DataFrame, cooc: DataFrame, decay: float) -> DataFrame:
    """``(user_key, item_id, cooc_sum, cooc_max, cooc_last)`` for every item that co-occurs with
    one of the user's recent items (the recent items themselves included)."""
    joined = recent.join(cooc, S.ITEM_ID).select(
        S.USER_KEY,
        F.col("other").alias(S.ITEM_ID),
        "cooc",
        "recency",
    )
    return joined.groupBy(S.USER_KEY, S.ITEM_ID).agg(
        F.sum(F.col("cooc") * F.pow(F.lit(decay), F.col("recency"))).alias(COOC_SUM),
        F.max("cooc").alias(COOC_MAX),
        F.max(F.when(F.col("recency") == 0, F.col("cooc"))).alias(COOC_LAST),
    )


def links(items: DataFrame) -> DataFrame:
    """``(item_id, other, relation)``: the catalog's links between two of ``items``' items (a link
    to an item the catalog lacks cannot be served, so it is dropped here)."""
    known = items.select(F.col(S.ITEM_ID).alias("other"))
    # a gold table written before the catalog carried links has no such columns: no links
    kinds = [
        items.select(S.ITEM_ID, F.explode(F.col(kind)).alias("other"), F.lit(kind).alias("relation"))
        if kind in items.columns
        else items.select(S.ITEM_ID, F.lit(None).cast("string").alias("other"), F.lit(kind).alias("relation"))
        for kind in S.RELATIONS
    ]
    union = kinds[0]
    for k in kinds[1:]:
        union = union.unionByName(k)
    return union.join(known, "other", "left_semi").distinct()


def related_scores(recent: DataFrame, linked: DataFrame, decay: float) -> DataFrame:
    """``(user_key, item_id, complement_sum, complement_last, substitute_sum, substitute_last,
    related_back, related_score)`` for every item linked with one of the user's recent items.

    Forward links (the recent item's page names the item) count per kind, each recent item
    weighted ``decay ** recency`` like co-occurrence; ``related_back`` counts the backward ones
    (the item's page names a recent item: a refill names its printer); ``related_score`` is the
    forward sum over every kind, the candidate source's order."""
    forward = recent.join(linked, S.ITEM_ID).select(
        S.USER_KEY, F.col("other").alias(S.ITEM_ID), "relation", "recency", F.lit(True).alias("_fwd")
    )
    backward = recent.join(
        linked.withColumnRenamed(S.ITEM_ID, "_i"), F.col(S.ITEM_ID) == F.col("other")
    ).select(S.USER_KEY, F.col("_i").alias(S.ITEM_ID), "relation", "recency", F.lit(False).alias("_fwd"))
    weight = F.pow(F.lit(decay), F.col("recency"))
    aggs = []
    for kind, (total, last) in _RELATION_COLUMNS.items():
        mine = F.col("_fwd") & (F.col("relation") == kind)
        aggs += [
            F.sum(F.when(mine, weight).otherwise(0.0)).alias(total),
            F.max(F.when(mine & (F.col("recency") == 0), 1.0).otherwise(0.0)).alias(last),
        ]
    aggs += [
        F.sum(F.when(~F.col("_fwd"), weight).otherwise(0.0)).alias(RELATED_BACK),
        F.sum(F.when(F.col("_fwd"), weight).otherwise(0.0)).alias(RELATED_SCORE),
    ]
    return forward.unionByName(backward).groupBy(S.USER_KEY, S.ITEM_ID).agg(*aggs)


def _dot_feature(
    df: DataFrame, users: DataFrame | None, items: DataFrame | None, name: str, prefix: str
) -> DataFrame:
    """``df`` with column ``name``: the dot product of a model's user and item vectors (null
    where either is missing, or for every pair when the model is absent)."""
    if users is None or items is None:
        return df.withColumn(name, F.lit(None).cast("double"))
    u, i = f"{prefix}u", f"{prefix}i"
    return (
        df.join(users.select(S.USER_KEY, F.col("vector").alias(u)), S.USER_KEY, "left")
        .join(items.select(S.ITEM_ID, F.col("vector").alias(i)), S.ITEM_ID, "left")
        .withColumn(name, dot(F.col(u), F.col(i)))
    )


def assemble(
    cands: DataFrame,
    sources: Sequence[str],
    cooc: DataFrame,
    als_users: DataFrame | None,
    als_items: DataFrame | None,
    users: DataFrame,
    item_vectors: DataFrame,
    items: DataFrame,
    profiles: DataFrame,
    history: DataFrame,
    past: DataFrame,
    popularity: DataFrame,
    recent: DataFrame,
    taste: Tastes,
    related: DataFrame | None,
    seq_users: DataFrame | None = None,
    seq_items: DataFrame | None = None,
) -> DataFrame:
    """``cands`` (user_key, item_id, source, per-source score and rank) with ``features``
    (array<float>, :func:`feature_names` order; NaN where unknown).

    ``cooc`` is :func:`cooc_scores`' output, ``users``/``item_vectors`` the retriever's vectors
    (``vector``), ``als_*`` the ALS factors (``vector``; None without ALS), ``history`` the
    ``(user_key, history_length)`` of each user, ``past`` :func:`user_items`, ``popularity``
    :func:`item_popularity`, ``recent`` :func:`recent_items`, ``taste`` :func:`tastes` and
    ``related`` :func:`related_scores` (None when the catalog holds no links: the features are
    unknown then, while a pair absent from it has none) and ``seq_*`` the sequence retriever's
    vectors (None without one)."""
    relation_features = [*[c for pair in _RELATION_COLUMNS.values() for c in pair], RELATED_BACK]
    if related is None:
        linked = cands.select(
            *cands.columns, *[F.lit(None).cast("double").alias(n) for n in relation_features]
        )
    else:
        linked = cands.join(related.drop(RELATED_SCORE), [S.USER_KEY, S.ITEM_ID], "left").select(
            *cands.columns, *[F.coalesce(F.col(n), F.lit(0.0)).alias(n) for n in relation_features]
        )
    df = (
        linked.join(cooc, [S.USER_KEY, S.ITEM_ID], "left")
        .join(taste.items, S.ITEM_ID, "left")
        .join(taste.leaves, [S.USER_KEY, S.CATEGORY_PATH], "left")
        .join(taste.brands, [S.USER_KEY, S.BRAND], "left")
        .withColumn(LEAF_AFFINITY, F.coalesce(F.col(LEAF_AFFINITY), F.lit(0.0)))
        .withColumn(BRAND_SHARE, F.coalesce(F.col(BRAND_SHARE), F.lit(0.0)))
        .withColumn(TASTE, taste_score())
        .join(past, [S.USER_KEY, S.ITEM_ID], "left")
        .join(recent.withColumnRenamed("recency", USER_ITEM_RECENCY), [S.USER_KEY, S.ITEM_ID], "left")
        .join(F.broadcast(popularity), S.ITEM_ID, "left")
    )
    df = _dot_feature(df, als_users, als_items, ALS_DOT, "_a")
    df = _dot_feature(df, seq_users, seq_items, SEQUENCE_DOT, "_s")
    df = (
        df.join(users.select(S.USER_KEY, F.col("vector").alias("_eu")), S.USER_KEY, "left")
        .join(item_vectors.select(S.ITEM_ID, F.col("vector").alias("_ei")), S.ITEM_ID, "left")
        .withColumn(EMBEDDING_DOT, dot(F.col("_eu"), F.col("_ei")))
        .join(history, S.USER_KEY, "left")
    )
    n_sources = sum(
        (F.col(score_column(s)).isNotNull().cast("int") for s in sources[1:]),
        F.col(score_column(sources[0])).isNotNull().cast("int"),
    )
    df = df.withColumn(N_SOURCES, n_sources)
    base = rk.pair_features(df, items, profiles)
    names = feature_names(sources)
    own = [n for n in names if n not in rk.FEATURE_NAMES]
    nan = F.lit(float("nan")).cast("float")
    columns = [F.coalesce(F.col(n).cast("float"), nan) for n in own]
    columns += [F.col(rk.FEATURES)[i] for i in range(len(rk.FEATURE_NAMES))]
    return base.select(*cands.columns, F.array(*columns).alias(rk.FEATURES))


@dataclass(frozen=True)
class Fitted:
    """One or more boosters whose standardised scores are averaged (:func:`fit_folds`).

    ``meta["members"]`` holds each booster's ``best_iteration`` and the ``mean`` and ``std`` of
    its scores on the rows it was fitted on: a ranking objective's scores have no scale of their
    own, and members fitted on different users differ in it, so each is standardised first."""

    boosters: list[Any]  # lightgbm.Booster, one per member
    features: list[str]
    meta: dict[str, Any]

    def predict(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """The ensemble's score of every row of ``x``."""
        return Members(self.boosters, self.meta["members"]).predict(x)


@dataclass(frozen=True)
class Members:
    """Boosters and their standardisation, as :class:`Fitted` holds them or as loaded from disk."""

    boosters: list[Any]
    stats: list[dict[str, Any]]

    def predict(self, x: NDArray[np.float32], num_threads: int | None = None) -> NDArray[np.float64]:
        total = np.zeros(len(x), dtype=np.float64)
        for booster, st in zip(self.boosters, self.stats, strict=True):
            threads = {} if num_threads is None else {"num_threads": num_threads}
            raw = booster.predict(x, num_iteration=st.get("best_iteration"), **threads)
            total += (raw - st.get("mean", 0.0)) / st.get("std", 1.0)
        return total / len(self.boosters)

    def representative(self) -> int:
        """The member with the median number of trees (members stop early at very different
        rounds; the first may hold a dozen trees and another a hundred)."""
        trees = [b.num_trees() for b in self.boosters]
        return int(np.argsort(trees, kind="stable")[(len(trees) - 1) // 2])

    def contributions(
        self, x: NDArray[np.float32], num_threads: int | None = None, every: bool = True
    ) -> NDArray[np.float64]:
        """SHAP contributions of the averaged score (n × features + 1, the last column the expected
        value): each member's, standardised like its score (they are additive), then averaged;
        with ``every=False`` the :meth:`representative` member's alone (an estimate of what the
        whole credits, at a fraction of the cost)."""
        total: NDArray[np.float64] | None = None
        pairs = list(zip(self.boosters, self.stats, strict=True))
        chosen = pairs if every else [pairs[self.representative()]]
        for booster, st in chosen:
            threads = {} if num_threads is None else {"num_threads": num_threads}
            c = booster.predict(x, num_iteration=st.get("best_iteration"), pred_contrib=True, **threads)
            c = np.asarray(c, dtype=np.float64)
            sd = st.get("std", 1.0)
            c /= sd
            c[:, -1] -= st.get("mean", 0.0) / sd
            total = c if total is None else total + c
        assert total is not None
        return total / len(chosen)


def _groups(users: NDArray[Any]) -> NDArray[np.int64]:
    """Sizes of consecutive runs of equal user keys (rows sorted by user)."""
    if len(users) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(users[1:] != users[:-1]) + 1
    return np.diff(np.concatenate([[0], change, [len(users)]])).astype(np.int64)


def _params(params: dict[str, Any], seed: int) -> dict[str, Any]:
    return {
        "objective": "rank_xendcg",
        "metric": "ndcg",
        "eval_at": [10],
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 2,
        "force_col_wise": True,
        **params,
    }


def _train(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    users: NDArray[Any],
    train: NDArray[np.bool_],
    valid: NDArray[np.bool_],
    names: list[str],
    params: dict[str, Any],
    rounds: int,
    early_stopping: int,
) -> tuple[Any, dict[str, Any]]:
    """One booster on the ``train`` rows, early-stopped on the ``valid`` ones' NDCG@10 when there
    are any, and its member statistics (:class:`Fitted`)."""
    import lightgbm as lgb

    dtrain = lgb.Dataset(x[train], y[train], group=_groups(users[train]), feature_name=names)
    sets, callbacks = [dtrain], list[Any]()
    if valid.any():
        dvalid = lgb.Dataset(x[valid], y[valid], group=_groups(users[valid]), reference=dtrain)
        sets = [dvalid]
        callbacks.append(lgb.early_stopping(early_stopping, verbose=False))
    booster = lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=sets, callbacks=callbacks)
    best = int(booster.best_iteration or rounds)
    fitted_scores = np.asarray(booster.predict(x[train], num_iteration=best), dtype=np.float64)
    std = float(fitted_scores.std())
    stats = {"best_iteration": best, "mean": float(fitted_scores.mean()), "std": std if std > 0 else 1.0}
    return booster, stats


def _fitted(
    boosters: list[Any], stats: list[dict[str, Any]], names: list[str], params: dict[str, Any]
) -> Fitted:
    gain = np.zeros(len(names))
    for booster, st in zip(boosters, stats, strict=True):
        gain += booster.feature_importance("gain", iteration=st["best_iteration"]) / len(boosters)
    importances = {n: float(g) for n, g in sorted(zip(names, gain, strict=True), key=lambda t: -t[1])}
    meta = {
        "features": names,
        "members": stats,
        "importance_gain": importances,
        "params": params,
    }
    return Fitted(boosters, names, meta)


def fit(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    users: NDArray[Any],
    valid: NDArray[np.bool_],
    names: list[str],
    params: dict[str, Any],
    rounds: int,
    early_stopping: int,
    seed: int,
) -> Fitted:
    """A listwise ranker on lists (rows sorted by user, one list per user; ``params`` may name the
    objective), early-stopped on the ``valid`` users' NDCG@10 when there are any."""
    base = _params(params, seed)
    booster, stats = _train(x, y, users, ~valid, valid, names, base, rounds, early_stopping)
    return _fitted([booster], [stats], names, base)


def fold_of(users: NDArray[Any], folds: int, seed: int) -> NDArray[np.int64]:
    """Each row's fold, 0..folds-1, by its user (a seeded shuffle of the distinct users, dealt
    round-robin: folds of equal size, the same on every run)."""
    distinct = np.unique(users)
    order = np.random.default_rng(seed).permutation(len(distinct))
    fold = np.empty(len(distinct), dtype=np.int64)
    fold[order] = np.arange(len(distinct)) % folds
    return np.asarray(fold[np.searchsorted(distinct, users)], dtype=np.int64)


def fit_folds(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    users: NDArray[Any],
    names: list[str],
    params: dict[str, Any],
    rounds: int,
    early_stopping: int,
    seed: int,
    folds: int,
    scored: NDArray[np.bool_] | None = None,
) -> tuple[Fitted, NDArray[np.float64]]:
    """``folds`` listwise rankers, each fitted on the other folds' users and early-stopped on its
    own fold's, averaged (:class:`Fitted`), and the out-of-fold score of every row (the member
    that did not see the row's user), standardised like the members' scores.

    Why: a few hundred lists give one model a noisy stopping point and noisy trees; bagging over
    folds uses every list for fitting and for stopping, and averaging members steadies the order
    (demo validation lists, 6 repeated user splits: held-out NDCG@10 .284 against .272 for one
    model early-stopped on a fifth). ``scored`` marks the rows early stopping reads (the
    candidates serving orders); a fold's other rows are left out of its member entirely."""
    base = _params(params, seed)
    scored = np.ones(len(y), dtype=bool) if scored is None else scored
    fold = fold_of(users, folds, seed)
    boosters, stats = [], []
    oof = np.full(len(y), np.nan)
    for k in range(folds):
        mine = fold == k
        booster, st = _train(x, y, users, ~mine, mine & scored, names, base, rounds, early_stopping)
        boosters.append(booster)
        stats.append(st)
        if mine.any():
            raw = booster.predict(x[mine], num_iteration=st["best_iteration"])
            oof[mine] = (raw - st["mean"]) / st["std"]
    return _fitted(boosters, stats, names, base), oof


def member_file(index: int) -> str:
    """Member 0 is ``ltr.txt``, the others ``ltr.<i>.txt``. Only :func:`load_members` reads them
    right (standardised, averaged): member 0 alone is not the model."""
    return LTR_FILE if index == 0 else f"ltr.{index}.txt"


def save(fitted: Fitted, out: Path, extra: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("ltr.*.txt"):  # an earlier version's extra members
        stale.unlink()
    for i, (booster, st) in enumerate(zip(fitted.boosters, fitted.meta["members"], strict=True)):
        booster.save_model(str(out / member_file(i)), num_iteration=st["best_iteration"])
    (out / LTR_META).write_text(json.dumps({**fitted.meta, **extra}, indent=2, default=str))


def calibrate(scores: NDArray[Any], labels: NDArray[Any]) -> tuple[float, float]:
    """``(a, b)`` with ``sigmoid(a * score + b)`` the probability that a candidate is the one taken
    (Platt scaling). A ranking objective's scores have no scale of their own; the business rules
    add log-boosts (price, promotion) to the log-probability, so without this the boosts, not the
    ranker, would decide the order."""
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(C=1e4).fit(np.asarray(scores, dtype=np.float64).reshape(-1, 1), labels > 0)
    return float(fitted.coef_[0, 0]), float(fitted.intercept_[0])


def probability(score: Column, meta: dict[str, Any]) -> Column:
    """The calibrated probability of ``score`` (the raw score's sigmoid for a model saved without
    a calibration)."""
    a, b = meta.get("calibration", (1.0, 0.0))
    return 1.0 / (1.0 + F.exp(-(F.lit(float(a)) * score + F.lit(float(b)))))


def exists(path: str | Path) -> bool:
    return (Path(path) / LTR_FILE).is_file()


def load_meta(path: str | Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((Path(path) / LTR_META).read_text())
    return meta


def model_meta(model_dir: str | Path) -> dict[str, Any] | None:
    """The learning-to-rank metadata of a trained model directory (its ``ranker/``), None when
    training kept no learning-to-rank model there."""
    ranker_dir = Path(model_dir) / rk.RANKER_DIR
    return load_meta(ranker_dir) if exists(ranker_dir) else None


def predict_frame(
    df: DataFrame, model_dir: str, names: list[str], groups: Sequence[Sequence[int]] | None = None
) -> DataFrame:
    """``df`` (user_key, item_id, features) → (user_key, item_id, ltr_score), in Spark tasks (the
    boosters loaded once per Python worker from ``model_dir``, their scores averaged).

    With ``groups`` (lists of feature indices), also ``top_group``: the group whose summed SHAP
    contributions (LightGBM's ``pred_contrib``, of :meth:`Members.representative`: the members
    are fitted on mostly the same lists) raise the row's score the most, -1 when none raises it: what
    the model itself credits for the item, which explanations name."""
    fields = [
        StructField(S.USER_KEY, StringType(), False),
        StructField(S.ITEM_ID, StringType(), False),
        StructField(LTR_SCORE, FloatType(), False),
    ]
    if groups is not None:
        fields.append(StructField(TOP_GROUP, IntegerType(), False))
    width = len(names)
    members = [np.asarray(g, dtype=np.int64) for g in groups or []]

    def run(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        booster = _cached_booster(model_dir)
        for batch in batches:
            if batch.empty:
                continue
            x = np.stack(list(batch[rk.FEATURES])).astype(np.float32).reshape(-1, width)
            out: dict[str, Any] = {S.USER_KEY: batch[S.USER_KEY], S.ITEM_ID: batch[S.ITEM_ID]}
            out[LTR_SCORE] = booster.predict(x, num_threads=1).astype(np.float32)
            if groups is not None:
                # SHAP over every member cost the scoring job 3.6 times its time (demo: 413 s
                # against 116 s) for an explanation: one member's credit stands for all
                contrib = booster.contributions(x, num_threads=1, every=False)
                out[TOP_GROUP] = top_group(contrib, members)
            yield pd.DataFrame(out)

    return df.select(S.USER_KEY, S.ITEM_ID, rk.FEATURES).mapInPandas(run, StructType(fields))


def top_group(contrib: NDArray[Any], groups: Sequence[NDArray[Any]]) -> NDArray[np.int32]:
    """Per row of ``contrib`` (n × features + 1, the last column the expected value), the index of
    the group with the largest positive summed contribution, -1 where no group's sum is positive."""
    if not groups:
        return np.full(len(contrib), -1, dtype=np.int32)
    sums = np.stack([contrib[:, g].sum(axis=1) for g in groups], axis=1)
    best = sums.argmax(axis=1)
    return np.where(sums[np.arange(len(sums)), best] > 0, best, -1).astype(np.int32)


_BOOSTERS: dict[str, Members] = {}


def load_members(model_dir: str | Path) -> Members:
    """The saved boosters with their standardisation (one unstandardised booster for a model saved
    before ensembles: its meta names no members)."""
    import lightgbm as lgb

    stats = load_meta(model_dir).get("members") or [{}]
    boosters = [lgb.Booster(model_file=str(Path(model_dir) / member_file(i))) for i in range(len(stats))]
    # the files hold the best iterations only: predict with every tree they have
    return Members(boosters, [{k: v for k, v in st.items() if k != "best_iteration"} for st in stats])


def _cached_booster(model_dir: str) -> Members:
    if model_dir not in _BOOSTERS:
        _BOOSTERS[model_dir] = load_members(model_dir)
    return _BOOSTERS[model_dir]


def ndcg_at(scores: NDArray[Any], labels: NDArray[Any], users: NDArray[Any], k: int) -> float:
    """Mean NDCG@k over users with a positive (rows sorted by user): the selection metric."""
    total, n = 0.0, 0
    start = 0
    for size in _groups(users):
        s, y = scores[start : start + size], labels[start : start + size]
        start += size
        if y.max() <= 0:
            continue
        order = np.argsort(-s, kind="stable")[:k]
        gains = (y[order] > 0) / np.log2(np.arange(2, len(order) + 2))
        ideal = 1.0 / np.log2(np.arange(2, min(int((y > 0).sum()), k) + 2))
        total += float(gains.sum() / ideal.sum())
        n += 1
    return total / n if n else 0.0
