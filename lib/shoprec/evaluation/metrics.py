"""Ranking and beyond-accuracy metrics, computed in Spark: one row per user, then one aggregate.

Nothing here collects users to the driver. Inputs are long tables: recommendations
``(user_key, rank, item_id)`` and ground truth ``(user_key, item_id)``. Definitions (K a cut-off,
R a user's relevant items, r the 1-based ranks at which they were recommended):

- HitRate@K = 1 if any r <= K;  Precision@K = hits / K;  Recall@K = hits / |R|;
- NDCG@K = sum over hits of 1/log2(r+1), over the ideal sum for min(K, |R|) hits;
- MAP@K = sum over hits (j-th hit at rank r) of j/r, over min(K, |R|);
- MRR = 1 / the first r in the whole list (0 if none).

Users with relevant items but no recommendations count as zeros: they are not dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S

RANKS, N_REL = "_ranks", "_n_rel"
ALL = "all"


def _per_user(recs: DataFrame, truth: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Per (keys, user): the sorted ranks of the relevant items and how many are relevant."""
    relevant = truth.select(*keys, S.USER_KEY, S.ITEM_ID).distinct()
    joined = relevant.join(recs.select(S.USER_KEY, S.ITEM_ID, S.RANK), [S.USER_KEY, S.ITEM_ID], "left")
    return joined.groupBy(*keys, S.USER_KEY).agg(
        F.sort_array(F.collect_list(S.RANK)).alias(RANKS), F.count(F.lit(1)).alias(N_REL)
    )


def ranking_columns(k: int) -> dict[str, Column]:
    """The per-user value of every cut-off metric at ``k``, from ``RANKS`` and ``N_REL``."""
    hits = F.filter(RANKS, lambda r: r <= k)
    n_hits = F.size(hits).cast("double")
    ideal = F.least(F.lit(k), F.col(N_REL))
    dcg = F.aggregate(hits, F.lit(0.0), lambda acc, r: acc + 1.0 / F.log2(r + 1.0))
    idcg = F.aggregate(F.sequence(F.lit(1), ideal), F.lit(0.0), lambda acc, i: acc + 1.0 / F.log2(i + 1.0))
    ap = F.aggregate(
        F.transform(hits, lambda r, j: (j + 1.0) / r), F.lit(0.0), lambda acc, x: acc + x
    ) / ideal.cast("double")
    return {
        "hit_rate": F.when(n_hits > 0, 1.0).otherwise(0.0),
        "precision": n_hits / k,
        "recall": n_hits / F.col(N_REL),
        "ndcg": dcg / idcg,
        "map": ap,
    }


def ranking_metrics(
    recs: DataFrame, truth: DataFrame, ks: Sequence[int], keys: Sequence[str] = ()
) -> DataFrame:
    """Mean of each metric over users, per group of ``keys`` (for slices): long format
    ``(*keys, metric, k, value, users)``; MRR has ``k = 0`` (the whole list)."""
    per_user = _per_user(recs, truth, keys)
    cols: list[Column] = [F.count(F.lit(1)).alias(S.USERS)]
    names: list[tuple[str, int]] = []
    for k in ks:
        for metric, col in ranking_columns(k).items():
            cols.append(F.avg(col).alias(f"{metric}@{k}"))
            names.append((metric, k))
    mrr = F.when(F.size(RANKS) > 0, 1.0 / F.get(F.col(RANKS), 0)).otherwise(0.0)
    cols.append(F.avg(mrr).alias("mrr@0"))
    names.append(("mrr", 0))
    wide = per_user.groupBy(*keys).agg(*cols)
    return _long(wide, keys, names)


def _long(wide: DataFrame, keys: Sequence[str], names: Sequence[tuple[str, int]]) -> DataFrame:
    entries = F.array(
        *[
            F.struct(F.lit(m).alias(S.METRIC), F.lit(k).alias(S.K), F.col(f"`{m}@{k}`").alias(S.VALUE))
            for m, k in names
        ]
    )
    return wide.select(*keys, S.USERS, F.explode(entries).alias("_m")).select(
        *keys,
        F.col("_m")[S.METRIC].alias(S.METRIC),
        F.col("_m")[S.K].cast("int").alias(S.K),
        F.col("_m")[S.VALUE].cast("double").alias(S.VALUE),
        F.col(S.USERS).cast("long").alias(S.USERS),
    )


def sampled_metrics(ranks: DataFrame, ks: Sequence[int], keys: Sequence[str] = ()) -> DataFrame:
    """HitRate@K and NDCG@K of a positive ranked against its own negatives, one row per test event:
    ``ranks`` holds the positive's 1-based ``rank`` among (1 + N) candidates."""
    r = F.col(S.RANK).cast("double")
    cols: list[Column] = [F.count(F.lit(1)).alias(S.USERS)]
    names: list[tuple[str, int]] = []
    for k in ks:
        cols.append(F.avg(F.when(r <= k, 1.0).otherwise(0.0)).alias(f"hit_rate@{k}"))
        cols.append(F.avg(F.when(r <= k, 1.0 / F.log2(r + 1.0)).otherwise(0.0)).alias(f"ndcg@{k}"))
        names += [("hit_rate", k), ("ndcg", k)]
    cols.append(F.avg(1.0 / r).alias("mrr@0"))
    names.append(("mrr", 0))
    return _long(ranks.groupBy(*keys).agg(*cols), keys, names)


def positive_rank(scored: DataFrame) -> DataFrame:
    """From ``(event, is_positive, score)`` rows: each event's positive's rank among its candidates.

    Ties count half (the expected rank under a random tie-break), so a model that scores every
    candidate the same lands in the middle, not at the top.
    """
    pos = scored.where(F.col("is_positive")).select("event", F.col(S.SCORE).alias("_pos"))
    neg = scored.where(~F.col("is_positive")).select("event", S.SCORE)
    counts = (
        pos.join(neg, "event", "left")
        .groupBy("event")
        .agg(
            F.sum(F.when(F.col(S.SCORE) > F.col("_pos"), 1).otherwise(0)).alias("_gt"),
            F.sum(F.when(F.col(S.SCORE) == F.col("_pos"), 1).otherwise(0)).alias("_eq"),
        )
    )
    return counts.select("event", (1.0 + F.col("_gt") + F.col("_eq") / 2.0).alias(S.RANK))


def coverage(recs: DataFrame, catalog_size: int, ks: Sequence[int]) -> list[tuple[str, int, float]]:
    """Share of the catalog recommended to at least one user in the top K."""
    row = recs.agg(
        *[F.countDistinct(F.when(F.col(S.RANK) <= k, F.col(S.ITEM_ID))).alias(str(k)) for k in ks]
    ).first()
    assert row is not None
    return [("coverage", k, row[str(k)] / catalog_size if catalog_size else 0.0) for k in ks]


def category_diversity(recs: DataFrame, categories: DataFrame, k: int) -> float | None:
    """Intra-list diversity by category: the mean share of pairs in a user's top K that differ."""
    top = recs.where(F.col(S.RANK) <= k).join(categories, S.ITEM_ID, "left")
    per_cat = top.groupBy(S.USER_KEY, S.TOP_CATEGORY).agg(F.count(F.lit(1)).alias("_n"))
    per_user = per_cat.groupBy(S.USER_KEY).agg(
        F.sum("_n").alias("_n"), F.sum(F.col("_n") * (F.col("_n") - 1) / 2).alias("_same")
    )
    pairs = F.col("_n") * (F.col("_n") - 1) / 2
    row = per_user.where(F.col("_n") > 1).agg(F.avg(1 - F.col("_same") / pairs)).first()
    return None if row is None or row[0] is None else float(row[0])


def embedding_diversity(recs: DataFrame, vectors: DataFrame, k: int) -> float | None:
    """Intra-list diversity by embedding: the mean cosine distance between pairs in the top K.

    With unit vectors v_i, the sum over pairs of cos(v_i, v_j) is (|sum v|^2 - n) / 2, so one
    vector sum per user gives the mean without forming the pairs. The item vectors are broadcast
    (catalog-sized); users stay in their Spark tasks.
    """
    import numpy as np
    import pandas as pd

    pdf = vectors.select(S.ITEM_ID, "vector").toPandas()
    if pdf.empty:
        return None
    matrix = np.stack([np.asarray(v, dtype=np.float64) for v in pdf["vector"]])
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    spark = recs.sparkSession
    bc = spark.sparkContext.broadcast((matrix, {item: i for i, item in enumerate(pdf[S.ITEM_ID])}))
    lists = recs.where(F.col(S.RANK) <= k).groupBy(S.USER_KEY).agg(F.collect_list(S.ITEM_ID).alias("_items"))

    def per_user(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        m, index = bc.value
        for part in batches:
            out = []
            for items in part["_items"]:
                rows = [index[i] for i in items if i in index]
                n = len(rows)
                if n < 2:
                    continue
                total = m[rows].sum(axis=0)
                out.append(1.0 - (float(total @ total) - n) / (n * (n - 1)))
            yield pd.DataFrame({"_ild": out}, dtype="float64")

    row = lists.mapInPandas(per_user, "_ild double").agg(F.avg("_ild")).first()
    return None if row is None or row[0] is None else float(row[0])


def novelty(recs: DataFrame, item_users: DataFrame, n_users: int, k: int) -> float | None:
    """Mean self-information -log2(p) of recommended items, p = share of users who interacted with
    the item in training (add-one smoothed, so never-seen items are the most novel, not infinite)."""
    p = (F.coalesce(F.col("_users"), F.lit(0)) + 1.0) / (n_users + 1.0)
    top = recs.where(F.col(S.RANK) <= k).join(item_users, S.ITEM_ID, "left")
    row = top.agg(F.avg(-F.log2(p))).first()
    return None if row is None or row[0] is None else float(row[0])


def exposure_gini(recs: DataFrame, catalog: DataFrame, k: int) -> float | None:
    """Gini coefficient of how often each catalog item appears in top-K lists (0 = even exposure,
    1 = all exposure on one item); never-recommended items count as zero exposure."""
    counts = recs.where(F.col(S.RANK) <= k).groupBy(S.ITEM_ID).agg(F.count(F.lit(1)).alias("_x"))
    x = (
        catalog.select(S.ITEM_ID)
        .distinct()
        .join(counts, S.ITEM_ID, "left")
        .select(F.coalesce("_x", F.lit(0)).cast("double").alias("_x"))
    )
    # Gini = 2·Σ i·x_(i) / (n·Σx) − (n+1)/n over the counts in ascending order. Sorting every
    # item in one task would not scale; the histogram of counts (one row per distinct count, at
    # most one per possible count) is small, and the items sharing a count take consecutive ranks.
    hist = sorted(
        (int(r["_x"]), int(r["_m"])) for r in x.groupBy("_x").agg(F.count(F.lit(1)).alias("_m")).collect()
    )
    n = sum(m for _, m in hist)
    total = sum(v * m for v, m in hist)
    if n == 0 or total == 0:
        return None
    wsum, before = 0.0, 0
    for value, m in hist:
        # ranks before+1 .. before+m, whose sum is m·before + m(m+1)/2
        wsum += value * (m * before + m * (m + 1) / 2.0)
        before += m
    return float(2.0 * wsum / (n * total) - (n + 1.0) / n)
