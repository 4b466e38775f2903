"""Scoring throughput: the ranker in Spark's pandas UDF against a bare torch loop, and memory at scale.

1. Throughput: N (user, candidate) pairs with d-dimensional vectors and the ranker's features are
   written to Parquet; then scored (a) by ``shoprec.scoring.model.score`` inside Spark
   (``local[C]``, ``scoring.threads`` = 1 per task, output consumed by the ``noop`` sink) and
   (b) by a plain loop in this process over the same rows already in memory as tensors, with C
   torch threads: the same cores. Printed: pairs/s of each and the ratio (goal >= 0.9x).
2. Scale (``--scale-users``): U users x K candidates generated in Spark, scored and re-ranked by
   the ``app`` scenario's rules, and the lists MERGEd into a Delta recommendations table; printed:
   wall time and the peak resident memory of the driver, the JVM and the Python workers.

    .venv/bin/python bench/scoring.py --pairs 200000 --dim 384
    .venv/bin/python bench/scoring.py --pairs 0 --scale-users 1000000 --candidates 100
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyspark.sql import functions as F

from memory import PeakRss
from shoprec import schemas as S
from shoprec.config import from_dict
from shoprec.scoring import model as scoring_model
from shoprec.spark import get_spark
from shoprec.training import ranker as rk


def _ranker(root: Path, dim: int) -> Path:
    torch.manual_seed(0)
    model = rk.Ranker(dim, len(rk.FEATURE_NAMES), (128, 32)).eval()
    rk.save(model, root / "ranker", {"weights": {"click": 1.0, "purchase": 1.0, "value": 0.0}})
    return root / "ranker"


def throughput(spark, root: Path, pairs: int, dim: int, cores: int, batch: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    users = rng.normal(size=(pairs, dim)).astype(np.float32)
    items = rng.normal(size=(pairs, dim)).astype(np.float32)
    feats = rng.random(size=(pairs, len(rk.FEATURE_NAMES))).astype(np.float32)
    ranker = _ranker(root, dim)
    pdf = pd.DataFrame({rk.USER_VECTOR: list(users), rk.ITEM_VECTOR: list(items), rk.FEATURES: list(feats)})
    path = str(root / "pairs")
    spark.createDataFrame(pdf).repartition(4 * cores).write.mode("overwrite").parquet(path)
    del pdf

    model = rk.load(ranker).model
    torch.set_num_threads(cores)
    tensors = [torch.from_numpy(a) for a in (users, items, feats)]
    scoring_model.predict(model, users[:batch], items[:batch], feats[:batch], batch)  # warm-up
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, pairs, batch):
            sl = slice(start, start + batch)
            torch.sigmoid(model(tensors[0][sl], tensors[1][sl], tensors[2][sl]))
    bare = pairs / (time.perf_counter() - t0)

    df = spark.read.parquet(path)
    scoring_model.score(df, str(ranker), batch_size=batch, threads=1).write.format("noop").mode(
        "overwrite"
    ).save()  # warm-up: Python workers start and load the ranker
    t0 = time.perf_counter()
    scoring_model.score(df, str(ranker), batch_size=batch, threads=1).write.format("noop").mode(
        "overwrite"
    ).save()
    udf = pairs / (time.perf_counter() - t0)
    print(f"throughput, {pairs:,} pairs, {dim} dims, {cores} cores")
    print(f"  bare torch loop:   {bare:12,.0f} pairs/s")
    print(f"  Spark pandas UDF:  {udf:12,.0f} pairs/s")
    print(f"  UDF / bare: {udf / bare:.2f}x (goal >= 0.9x)")


def scale(spark, root: Path, users: int, candidates: int, dim: int, batch: int) -> None:  # type: ignore[no-untyped-def]
    from shoprec.config import ScenarioConfig
    from shoprec.scoring import rules
    from shoprec.scoring.job import LIST_SCHEMA, merge_lists

    ranker = _ranker(root, dim)
    n = users * candidates
    vec = F.transform(F.sequence(F.lit(1), F.lit(dim)), lambda i: F.sin(F.col("id") * i).cast("float"))
    pairs = spark.range(n).select(
        F.format_string("u%09d", (F.col("id") / candidates).cast("long")).alias(S.USER_KEY),
        F.format_string("i%06d", F.col("id") % 50_000).alias(S.ITEM_ID),
        F.lit("embedding").alias(S.SOURCE),
        vec.alias(rk.USER_VECTOR),
        vec.alias(rk.ITEM_VECTOR),
        F.array(*[F.lit(0.5).cast("float") for _ in rk.FEATURE_NAMES]).alias(rk.FEATURES),
        F.lit(10.0).cast("float").alias(rk.VALUE),
        F.lit(True).alias(S.IN_STOCK),
        F.lit(False).alias(rules.BOUGHT),
        F.format_string("c%02d", F.col("id") % 20).alias(S.TOP_CATEGORY),
        F.lit(0.0).cast("float").alias(rules.BAND_GAP),
        F.lit(0.0).cast("float").alias(rules.DISCOUNT),
    )
    sc = ScenarioConfig(name="app", k=10, diversity="category_cap", category_cap=3)
    cfg = from_dict({"paths": {"root": str(root / "lake")}})
    with PeakRss() as mem:
        t0 = time.perf_counter()
        scored = scoring_model.score(pairs, str(ranker), batch_size=batch).drop(scoring_model.LOADER_PID)
        lists = scored.groupBy(S.USER_KEY).applyInPandas(rules.per_user(sc), LIST_SCHEMA)
        merge_lists(spark, cfg, lists, sc, "bench", "bench-run")  # the scoring job's MERGE
        seconds = time.perf_counter() - t0
    rows = spark.read.format("delta").load(cfg.table("recommendations")).count()
    print(f"scale: {users:,} users x {candidates} candidates = {n:,} pairs scored, re-ranked, written")
    print(f"  {rows:,} list rows in {seconds:,.0f}s ({n / seconds:,.0f} pairs/s)")
    print(f"  peak memory (driver + JVM + Python workers): {mem.peak / 2**30:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--scale-users", type=int, default=0)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = from_dict({"spark": {"master": f"local[{args.cores}]", "driver_memory": "4g"}})
    spark = get_spark(cfg.spark)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.pairs:
            throughput(spark, root, args.pairs, args.dim, args.cores, args.batch)
        if args.scale_users:
            scale(spark, root, args.scale_users, args.candidates, args.dim, args.batch)


if __name__ == "__main__":
    main()
