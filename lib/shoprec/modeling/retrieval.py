"""Catalog-wide top-K retrieval: every user's vector against every item's, in bounded memory.

Users stay distributed: a ``mapInArrow`` task takes Arrow batches of users and multiplies
``user_block`` of them at a time against the item matrix ``item_block`` items at a time, keeping a
running top K. The item matrix is broadcast once when it fits a configured bound; a larger one
(10 M items of 384 floats is 15 GB, which no driver broadcasts) is cut into shards of at most
that size, each broadcast in turn against every user block, and each user's per-shard top K are
merged. Peak memory per task is about ``user_block x item_block`` scores plus one shard, whatever
the number of users or items.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, IntegerType, StringType, StructField, StructType

from shoprec import schemas as S
from shoprec.indexes import dense_index

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


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(S.USER_KEY, pa.string(), False),
            pa.field(S.RANK, pa.int32(), False),
            pa.field(S.ITEM_ID, pa.string(), False),
            pa.field(S.SCORE, pa.float32()),
        ]
    )


ARROW_SCHEMA = _arrow_schema()


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


def _exclusions(exclude: list[NDArray[Any]]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Per-user lists of item rows as two flat arrays: (user row, item row)."""
    empty: list[NDArray[Any]] = [np.zeros(0, dtype=np.int64)]
    rows = np.concatenate([np.full(len(e), r, dtype=np.int64) for r, e in enumerate(exclude)] + empty)
    cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude] + empty)
    return rows, cols


def tensor(array: NDArray[Any]) -> Any:
    """A torch view of ``array`` without a copy, also when it is a read-only Arrow buffer (torch
    warns about those; nothing here writes to its inputs)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array))


def top_k_block(
    users: NDArray[Any],
    items: NDArray[Any],
    k: int,
    item_block: int,
    exclude: list[NDArray[Any]] | tuple[NDArray[Any], NDArray[Any]] | None = None,
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Top-``k`` item rows and scores for each user row, scoring ``item_block`` items at a time.

    ``exclude``: per user, the item rows never to return; or the same as two flat arrays
    ``(user rows, item rows)``."""
    import torch

    u = tensor(np.asarray(users, dtype=np.float32))
    best_s = torch.full((u.shape[0], 0), float("-inf"))
    best_i = torch.zeros((u.shape[0], 0), dtype=torch.long)
    m = tensor(items)
    rows = cols = None
    if exclude is not None:
        rows, cols = exclude if isinstance(exclude, tuple) else _exclusions(exclude)
    for start in range(0, m.shape[0], item_block):
        block = m[start : start + item_block]
        scores = u @ block.T
        if rows is not None and cols is not None and len(cols):
            inside = (cols >= start) & (cols < start + block.shape[0])
            scores[torch.from_numpy(rows[inside]), torch.from_numpy(cols[inside] - start)] = float("-inf")
        rows_of = torch.arange(start, start + block.shape[0]).expand(scores.shape[0], -1)
        s, i = _best(scores, rows_of, k)
        if best_s.shape[1] == 0:
            best_s, best_i = s, i
            continue
        best_s, best_i = _best(torch.cat([best_s, s], 1), torch.cat([best_i, i], 1), k)
    return best_i.numpy(), best_s.numpy()


def _best(scores: Any, rows: Any, k: int) -> tuple[Any, Any]:
    """Each user's top ``k`` of ``scores`` (users × candidates; ``rows``: each candidate's item
    row) by score, ties by item row, lower first. Items with one vector score alike (variants
    whose text differs only past the tower's width): ``torch.topk`` would pick among them
    arbitrarily, and the lists would depend on how the catalog is cut into blocks and shards."""
    import torch

    k = min(k, scores.shape[1])
    top_s, pos = torch.topk(scores, k, dim=1)
    top_i = torch.gather(rows, 1, pos)
    if k == 0:
        return top_s, top_i
    tied = (scores >= top_s[:, -1:]).sum(1) > k  # equal scores on both sides of the cut
    if bool(tied.any()):
        at = tied.nonzero().squeeze(1)
        s_t, r_t = _ordered(scores[at], rows[at])
        top_s[at], top_i[at] = s_t[:, :k], r_t[:, :k]
    return _ordered(top_s, top_i)


def _ordered(scores: Any, rows: Any) -> tuple[Any, Any]:
    """``scores`` and ``rows`` with each user's entries ordered by score, ties by item row."""
    import torch

    by_row = torch.argsort(rows, dim=1, stable=True)
    scores, rows = torch.gather(scores, 1, by_row), torch.gather(rows, 1, by_row)
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)
    return torch.gather(scores, 1, by_score), torch.gather(rows, 1, by_score)


def vectors_of(column: Any, what: str) -> NDArray[Any]:
    """An Arrow ``list<float>`` column as an ``(n, d)`` float32 matrix, without a per-row copy.

    Pandas would turn each list into its own object; the flat values buffer already is the
    matrix. Rows must all have the same length (a null or ragged vector names its row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from shoprec.errors import ShoprecError

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(np.isnan(lengths.astype(np.float64)) | (lengths != lengths[0]))
    if column.null_count or len(bad):
        row = (
            int(bad[0])
            if len(bad)
            else int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        )
        raise ShoprecError(f"{what}: row {row} of a batch has a missing or differently sized vector")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(n, int(lengths[0]))


def top_k(
    spark: SparkSession,
    users: DataFrame,
    items: ItemMatrix,
    k: int,
    exclude: DataFrame | None = None,
    user_block: int = 256,
    item_block: int = 32768,
    threads: int = 1,
) -> DataFrame:
    """Each user's ``k`` best items by dot product: ``(user_key, rank, item_id, score)``.

    ``users`` holds ``(user_key, vector)``; ``exclude`` optional ``(user_key, item_id)`` pairs never
    to recommend (what the user already bought). Excluded items are masked, not filtered after
    the fact, so every user still gets ``k`` items when the catalog has them.

    Batches move as Arrow record batches (``mapInArrow``) both ways: the user vectors' values
    buffer is the matrix the multiply reads, and the output is already one row per (user, rank)
    with the item id, so Spark neither converts arrays row by row nor joins ids back.
    """
    return _broadcast_top_k(spark, users, items, k, exclude, user_block, item_block, threads)[0]


def _broadcast_top_k(
    spark: SparkSession,
    users: DataFrame,
    items: ItemMatrix,
    k: int,
    exclude: DataFrame | None,
    user_block: int,
    item_block: int,
    threads: int,
) -> tuple[DataFrame, list[Any]]:
    """:func:`top_k` and the broadcasts it reads (destroyed by a caller that is done with them)."""
    if len(items.ids) == 0:
        return spark.createDataFrame([], TOPK_SCHEMA), []
    bc_matrix = spark.sparkContext.broadcast(items.matrix)
    bc_ids = spark.sparkContext.broadcast(items.ids)
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

    def score(batches: Iterable[Any]) -> Iterable[Any]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import torch

        torch.set_num_threads(threads)
        matrix = bc_matrix.value
        ids = pa.array(bc_ids.value, type=pa.string())
        for batch in batches:
            for start in range(0, batch.num_rows, user_block):
                part = batch.slice(start, user_block)
                vectors = vectors_of(part.column(1), "top_k: user vectors")
                excl = part.column(2)
                rows = pc.list_parent_indices(excl).to_numpy(zero_copy_only=False).astype(np.int64)
                cols = excl.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
                best_i, best_s = top_k_block(vectors, matrix, k, item_block, (rows, cols))
                # masked items (exclusions) come back with -inf when fewer than k items were left
                keep = best_s != -np.inf
                user_row, rank = np.nonzero(keep)
                yield pa.RecordBatch.from_arrays(
                    [
                        part.column(0).take(pa.array(user_row)),
                        pa.array(rank.astype(np.int32) + 1),
                        ids.take(pa.array(best_i[keep])),
                        pa.array(best_s[keep].astype(np.float32)),
                    ],
                    schema=ARROW_SCHEMA,
                )

    # by user, sorted: the same blocks on every run, so the same floating-point results
    out = (
        frame.repartition(2 * spark.sparkContext.defaultParallelism, S.USER_KEY)
        .sortWithinPartitions(S.USER_KEY)
        .mapInArrow(score, TOPK_SCHEMA)
    )
    return out, [bc_matrix, bc_ids]


def matrix_mib(items: DataFrame) -> tuple[int, float]:
    """(rows, MiB as float32) of an ``(item_id, vector)`` frame, without collecting it."""
    row = items.agg(F.count(F.lit(1)).alias("n"), F.max(F.size(VECTOR)).alias("d")).first()
    n = int(row["n"]) if row else 0
    d = int(row["d"] or 0) if row else 0
    return n, n * max(d, 0) * 4 / 2**20


def top_k_from(
    spark: SparkSession,
    users: DataFrame,
    items: DataFrame,
    k: int,
    exclude: DataFrame | None = None,
    user_block: int = 256,
    item_block: int = 32768,
    threads: int = 1,
    broadcast_mib: float = 1024.0,
) -> DataFrame:
    """:func:`top_k` over an ``(item_id, vector)`` frame: one broadcast when the item matrix fits
    ``broadcast_mib``, else :func:`sharded_top_k` with shards of at most that size."""
    shards = shard_count(items, broadcast_mib, "retrieval")
    if shards <= 1:
        return top_k(spark, users, ItemMatrix.from_frame(items), k, exclude, user_block, item_block, threads)
    return sharded_top_k(spark, users, items, k, shards, exclude, user_block, item_block, threads)


def shard_count(items: DataFrame, broadcast_mib: float, purpose: str) -> int:
    """How many item-id shards an ``(item_id, vector)`` frame needs so that no broadcast of its
    matrix is over ``broadcast_mib`` (1: broadcast it whole); logged when it is more than one."""
    n, mib = matrix_mib(items)
    if mib <= broadcast_mib:
        return 1
    shards = math.ceil(mib / broadcast_mib)
    log.info(
        "%s: %d items (%.0f MiB) in %d shards of at most %.0f MiB", purpose, n, mib, shards, broadcast_mib
    )
    return shards


def item_shards(items: DataFrame, shards: int) -> Iterator[ItemMatrix]:
    """``items`` (``item_id, vector``) as ``shards`` matrices of consecutive item-id ranges of
    near-equal size, collected one at a time as the caller asks for the next: the driver holds one
    shard, never the catalog. One shard is :meth:`ItemMatrix.from_frame` itself; an empty frame
    yields no matrix at all."""
    if shards <= 1:
        whole = ItemMatrix.from_frame(items)
        if len(whole.ids):
            yield whole
        return
    n, _ = matrix_mib(items)
    if n == 0:
        return
    per_shard = math.ceil(n / shards)
    numbered = (
        items.select(S.ITEM_ID, VECTOR)
        .join(dense_index(items, S.ITEM_ID, "_pos"), S.ITEM_ID)
        .withColumn("_shard", (F.col("_pos") / F.lit(per_shard)).cast("int"))
        .drop("_pos")
        .localCheckpoint()
    )
    for shard in range(math.ceil(n / per_shard)):
        yield ItemMatrix.from_frame(numbered.where(F.col("_shard") == shard))


def sharded_top_k(
    spark: SparkSession,
    users: DataFrame,
    items: DataFrame,
    k: int,
    shards: int,
    exclude: DataFrame | None = None,
    user_block: int = 256,
    item_block: int = 32768,
    threads: int = 1,
) -> DataFrame:
    """:func:`top_k` with the catalog cut into ``shards`` ranges of item ids.

    Each shard in turn is collected (the driver holds one shard at a time), broadcast, and scored
    against every user block as Spark tasks; its per-user top ``k`` is checkpointed and its
    broadcast destroyed. Each user's candidates from all shards are then merged into one top ``k``
    by score (ties by item id). Exact: every item is scored against every user, as in one
    broadcast, so the lists are the same.
    """
    users = users.select(S.USER_KEY, VECTOR).localCheckpoint()  # read once per shard
    if exclude is not None:
        exclude = exclude.select(S.USER_KEY, S.ITEM_ID).localCheckpoint()
    found: DataFrame | None = None
    for matrix in item_shards(items, shards):
        part, broadcasts = _broadcast_top_k(spark, users, matrix, k, exclude, user_block, item_block, threads)
        part = part.localCheckpoint()  # computed while this shard's broadcast lives
        for bc in broadcasts:
            bc.destroy()
        found = part if found is None else found.unionByName(part)
    if found is None:  # no items
        return spark.createDataFrame([], TOPK_SCHEMA)
    best = Window.partitionBy(S.USER_KEY).orderBy(F.desc(S.SCORE), S.ITEM_ID)
    return (
        found.withColumn(S.RANK, F.row_number().over(best))
        .where(F.col(S.RANK) <= k)
        .select(*TOPK_SCHEMA.fieldNames())
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
