"""Blocked top-K retrieval in Spark against the machine's own matrix-multiply rate; ALS
recommendation memory as users grow.

1. Throughput: ``top_k`` over U users x I items (d dims) inside Spark, against a plain torch
   ``U @ I.T`` of the same shapes timed here, in the same run, with the same number of threads in
   total. Printed: multiply-adds per second of each and the ratio (goal >= 50%).
2. ALS: fit on a synthetic implicit matrix, then recommend for every user through the blocked
   retrieval at N and 4N users, sampling the peak resident memory of Spark's Python workers.
   Printed: the peak at each size and their ratio (goal: flat, about 1x).

    .venv/bin/python bench/retrieval.py --users 20000 --items 20000 --dim 384

At 384 dimensions (the retriever's) the multiply dominates; at 64 the top-K pass over each row's
scores (memory-bound, a few operations per score) costs as much as the multiply itself, so the
ratio falls to about a quarter whatever the Spark side does.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from memory import PeakRss
from shoprec import schemas as S
from shoprec.config import from_dict
from shoprec.modeling.retrieval import VECTOR, ItemMatrix, top_k
from shoprec.spark import get_spark


def _vectors(spark: SparkSession, key: str, n: int, dim: int, seed: int, parts: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    pdf = pd.DataFrame(
        {
            key: [f"{key[0]}{i:08d}" for i in range(n)],
            VECTOR: list(rng.normal(size=(n, dim)).astype(np.float32)),
        }
    )
    return spark.createDataFrame(pdf, f"{key} string, {VECTOR} array<float>").repartition(parts)


def throughput(spark: SparkSession, users: int, items: int, dim: int, k: int, tasks: int) -> None:
    ev = from_dict({}).evaluation  # the default blocks, as evaluation and scoring use them
    u = _vectors(spark, S.USER_KEY, users, dim, 1, tasks).cache()
    u.count()
    matrix = ItemMatrix.from_frame(_vectors(spark, S.ITEM_ID, items, dim, 2, 1))
    # baseline: the same multiply-adds as one torch matmul, all cores' threads
    torch.set_num_threads(tasks)
    a = torch.from_numpy(np.random.default_rng(3).normal(size=(users, dim)).astype(np.float32))
    b = torch.from_numpy(matrix.matrix)
    best_mm = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for start in range(0, users, 4096):
            _ = a[start : start + 4096] @ b.T
        best_mm = min(best_mm, time.perf_counter() - t0)
    best_rt = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        n = (
            top_k(spark, u, matrix, k, user_block=ev.user_block, item_block=ev.item_block)
            .agg(F.count(F.lit(1)))
            .first()
        )
        best_rt = min(best_rt, time.perf_counter() - t0)
        assert n is not None and n[0] == users * k
    madds = users * items * dim
    print(
        f"retrieval: {users:,} users x {items:,} items x {dim} dims, top {k}, {tasks} Spark tasks, "
        f"blocks of {ev.user_block} users x {ev.item_block} items"
    )
    print(f"  torch matmul (same shapes): {best_mm:7.2f}s  {madds / best_mm / 1e9:7.2f} G multiply-adds/s")
    print(f"  shoprec top_k in Spark:     {best_rt:7.2f}s  {madds / best_rt / 1e9:7.2f} G multiply-adds/s")
    print(f"  ratio: {best_mm / best_rt:.0%} of the matrix-multiply rate (goal >= 50%)")
    u.unpersist()


def als_memory(spark: SparkSession, users: int, items: int) -> None:
    from pyspark.ml.recommendation import ALS

    peaks = []
    for n in (users, 4 * users):
        rng = np.random.default_rng(n)
        rows = pd.DataFrame(
            {"u": rng.integers(0, n, size=n * 20), "i": rng.zipf(1.3, size=n * 20) % items, "w": 1.0}
        ).drop_duplicates(["u", "i"])
        model = ALS(
            rank=32, maxIter=3, implicitPrefs=True, userCol="u", itemCol="i", ratingCol="w", seed=1
        ).fit(spark.createDataFrame(rows))
        user_vecs = model.userFactors.select(
            F.col("id").cast("string").alias(S.USER_KEY), F.col("features").alias(VECTOR)
        )
        item_vecs = ItemMatrix.from_frame(
            model.itemFactors.select(
                F.col("id").cast("string").alias(S.ITEM_ID), F.col("features").alias(VECTOR)
            )
        )
        with PeakRss(include_self=False, python_only=True, interval=0.05) as peak:
            t0 = time.perf_counter()
            count = top_k(spark, user_vecs, item_vecs, 50).count()
            seconds = time.perf_counter() - t0
        peaks.append(peak.peak)
        print(
            f"ALS top-50 for {count // 50:,} users x {len(item_vecs.ids):,} items: {seconds:.1f}s, "
            f"peak Python worker RSS {peak.peak / 2**20:,.0f} MiB"
        )
    print(f"  peak memory at 4x users over 1x: {peaks[1] / peaks[0]:.2f}x (goal: flat)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384, help="384: all-MiniLM-L6-v2's, the retriever's")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--als-users", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spark = get_spark(from_dict({}).spark)
    tasks = spark.sparkContext.defaultParallelism
    throughput(spark, args.users, args.items, args.dim, args.k, tasks)
    if args.als_users:
        als_memory(spark, args.als_users, 5_000)


if __name__ == "__main__":
    main()
