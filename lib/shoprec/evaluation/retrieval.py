"""Catalog-wide top-K retrieval: every user's vector against every item's, in bounded memory.

Users stay distributed: a ``mapInPandas`` task takes Arrow batches of users and multiplies
``user_block`` of them at a time against the item matrix ``item_block`` items at a time, keeping a
running top K. The item matrix is broadcast once (catalogs are far smaller than user bases: a
million items of 128 floats is 512 MB). Peak memory per task is about
``user_block x item_block`` scores, whatever the number of users or items.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, IntegerType, StringType, StructField, StructType

from shoprec import schemas as S

log = logging.getLogger(__name__)

VECTOR = "vector"
EXCLUDE = "_exclude"
TOPK_SCHEMA = StructType(
    [
        StructField(S.USER_KEY, StringType(), False),
        StructField(S.RANK, IntegerType(), False),
        StructField(S.ITEM_ID, StringType(), False),
        StructField(S.SCORE, FloatType(), True),
    ]
)


@dataclass(frozen=True)
class ItemMatrix:
    """Item ids and their vectors as one dense float32 matrix (row i is ``ids[i]``)."""

    ids: NDArray[Any]
    matrix: NDArray[Any]

    @classmethod
    def from_frame(cls, items: DataFrame) -> ItemMatrix:
        """Collect ``(item_id, vector)`` once, in item-id order so results are reproducible."""
        pdf = items.select(S.ITEM_ID, VECTOR).orderBy(S.ITEM_ID).toPandas()
        if pdf.empty:
            return cls(np.array([], dtype=object), np.zeros((0, 1), dtype=np.float32))
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in pdf[VECTOR]])
        return cls(pdf[S.ITEM_ID].to_numpy(dtype=object), matrix)

    def index(self, spark: SparkSession) -> DataFrame:
        """``(item_id, _idx)``: the row of each item, for joining exclusions to positions."""
        pdf = pd.DataFrame({S.ITEM_ID: self.ids, "_idx": np.arange(len(self.ids), dtype=np.int32)})
        return spark.createDataFrame(pdf, f"{S.ITEM_ID} string, _idx int")


def top_k_block(
    users: NDArray[Any],
    items: NDArray[Any],
    k: int,
    item_block: int,
    exclude: list[NDArray[Any]] | None = None,
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Top-``k`` item rows and scores for each user row, scoring ``item_block`` items at a time."""
    import torch

    u = torch.from_numpy(np.ascontiguousarray(users, dtype=np.float32))
    best_s = torch.full((u.shape[0], 0), float("-inf"))
    best_i = torch.zeros((u.shape[0], 0), dtype=torch.long)
    m = torch.from_numpy(items)
    rows = cols = None
    if exclude is not None:
        empty: list[NDArray[Any]] = [np.zeros(0, dtype=np.int64)]
        rows = np.concatenate([np.full(len(e), r, dtype=np.int64) for r, e in enumerate(exclude)] + empty)
        cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude] + empty)
    for start in range(0, m.shape[0], item_block):
        block = m[start : start + item_block]
        scores = u @ block.T
        if rows is not None and cols is not None and len(cols):
            inside = (cols >= start) & (cols < start + block.shape[0])
            scores[torch.from_numpy(rows[inside]), torch.from_numpy(cols[inside] - start)] = float("-inf")
        s, i = torch.topk(scores, min(k, block.shape[0]), dim=1)
        best_s, order = torch.topk(torch.cat([best_s, s], 1), min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.gather(torch.cat([best_i, i + start], 1), 1, order)
    return best_i.numpy(), best_s.numpy()


def top_k(
    spark: SparkSession,
    users: DataFrame,
    items: ItemMatrix,
    k: int,
    exclude: DataFrame | None = None,
    user_block: int = 512,
    item_block: int = 8192,
    threads: int = 1,
) -> DataFrame:
    """Each user's ``k`` best items by dot product: ``(user_key, rank, item_id, score)``.

    ``users`` holds ``(user_key, vector)``; ``exclude`` optional ``(user_key, item_id)`` pairs never
    to recommend (what the user already bought). Excluded items are masked, not filtered after
    the fact, so every user still gets ``k`` items when the catalog has them.
    """
    if len(items.ids) == 0:
        return spark.createDataFrame([], TOPK_SCHEMA)
    bc_matrix = spark.sparkContext.broadcast(items.matrix)
    frame = users.select(S.USER_KEY, VECTOR)
    if exclude is not None:
        idx = (
            exclude.join(items.index(spark), S.ITEM_ID)
            .groupBy(S.USER_KEY)
            .agg(F.collect_list("_idx").alias(EXCLUDE))
        )
        frame = frame.join(idx, S.USER_KEY, "left")
    else:
        frame = frame.withColumn(EXCLUDE, F.lit(None).cast("array<int>"))

    def score(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        import torch

        torch.set_num_threads(threads)
        matrix = bc_matrix.value
        for pdf in batches:
            for start in range(0, len(pdf), user_block):
                part = pdf.iloc[start : start + user_block]
                vectors = np.stack([np.asarray(v, dtype=np.float32) for v in part[VECTOR]])
                excl = [np.asarray(e if e is not None else [], dtype=np.int64) for e in part[EXCLUDE]]
                best_i, best_s = top_k_block(vectors, matrix, k, item_block, excl)
                # one row per user with arrays: Arrow moves them in bulk; Spark explodes them
                yield pd.DataFrame(
                    {
                        S.USER_KEY: part[S.USER_KEY].to_numpy(),
                        "_idx": list(best_i.astype(np.int32)),
                        "_s": list(best_s),
                    }
                )

    # by user, sorted: the same blocks on every run, so the same floating-point results
    lists = (
        frame.repartition(2 * spark.sparkContext.defaultParallelism, S.USER_KEY)
        .sortWithinPartitions(S.USER_KEY)
        .mapInPandas(score, f"{S.USER_KEY} string, _idx array<int>, _s array<float>")
    )
    ranked = lists.select(S.USER_KEY, F.posexplode(F.arrays_zip("_idx", "_s")).alias("_pos", "_e")).select(
        S.USER_KEY,
        (F.col("_pos") + 1).cast("int").alias(S.RANK),
        F.col("_e._idx").alias("_idx"),
        F.col("_e._s").alias(S.SCORE),
    )
    # masked items (exclusions) come back with -inf when fewer than k items were left
    return (
        ranked.where(F.col(S.SCORE) > F.lit(float("-inf")))
        .join(F.broadcast(items.index(spark)), "_idx")
        .select(S.USER_KEY, S.RANK, S.ITEM_ID, S.SCORE)
    )


def score_pairs(pairs: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """The dot product of each ``(user_key, item_id)`` pair's vectors (0 where either is missing),
    in Spark SQL: sampled ranking scores a few candidates per user, no matrix needed."""
    u = users.select(S.USER_KEY, F.col(VECTOR).alias("_u"))
    i = items.select(S.ITEM_ID, F.col(VECTOR).alias("_i"))
    dot = F.aggregate(F.zip_with("_u", "_i", lambda a, b: a * b), F.lit(0.0), lambda acc, x: acc + x)
    return (
        pairs.join(u, S.USER_KEY, "left")
        .join(F.broadcast(i), S.ITEM_ID, "left")
        .withColumn(S.SCORE, F.coalesce(dot.cast("double"), F.lit(0.0)))
        .drop("_u", "_i")
    )
