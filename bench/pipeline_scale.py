"""Ingest → silver → gold against a plain Spark read → write of the same raw events, at 1× and 4×.

Baseline, measured in the same run on the same files: ``spark.read.schema(raw contract).json(...)``
then ``.write.parquet(...)``. Two runs per scale: the first load (every day but the last, from
empty tables) and the daily run that follows (the last day's files, folded in incrementally).
Printed: each one's time over its baseline's (goal ≤ 2.0×), and the first load's time at the largest
scale over the smallest (goal ≤ 4.4× for 4×).

    SHOPREC_PSEUDONYM_KEY=bench .venv/bin/python bench/pipeline_scale.py --scales 1 4
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from pyspark.sql import SparkSession

from shoprec import schemas as S
from shoprec.config import ShoprecConfig, from_dict
from shoprec.datagen.job import generate
from shoprec.etl.bronze import ingest_all
from shoprec.etl.silver import clean_all
from shoprec.features.job import build_gold
from shoprec.spark import get_spark


def _plain_copy(spark: SparkSession, source: str, target: str) -> float:
    """The baseline: read the raw JSON with the contract's schema and write it as Parquet."""
    started = time.perf_counter()
    spark.read.schema(S.RAW_EVENT_SCHEMA).json(source).write.mode("overwrite").parquet(target)
    return time.perf_counter() - started


def _pipeline(spark: SparkSession, cfg: ShoprecConfig) -> dict[str, float]:
    stages = {}
    for name, fn in (("ingest", ingest_all), ("clean", clean_all), ("features", build_gold)):
        t0 = time.perf_counter()
        fn(spark, cfg)
        stages[name] = time.perf_counter() - t0
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 4])
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("SHOPREC_PSEUDONYM_KEY", "bench-key")
    spark = get_spark(from_dict({}).spark)
    rows = []
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as root:
            cfg = from_dict(
                {
                    "paths": {"root": root},
                    "generator": {"users": args.users, "scale": scale, "bad_row_rate": 0.01},
                }
            )
            events = generate(spark, cfg).event_rows
            raw = Path(cfg.path("raw")) / "events"
            days = sorted(raw.glob("event_date=*"))
            held = Path(root) / "held" / days[-1].name
            shutil.move(str(days[-1]), held)
            history = _plain_copy(spark, str(raw), f"{root}/baseline")
            full = _pipeline(spark, cfg)
            daily = _plain_copy(spark, str(held), f"{root}/baseline_day")
            shutil.move(str(held), days[-1])
            incremental = _pipeline(spark, cfg)
            rows.append((scale, events, history, full, daily, incremental))
    print("first load: all days but the last, from empty tables")
    print(
        f"{'scale':>6} {'events':>9} {'baseline s':>10} {'ingest s':>9} {'clean s':>8} {'gold s':>7} "
        f"{'total s':>8} {'vs baseline':>11}"
    )
    for scale, events, baseline, stages, _, _ in rows:
        total = sum(stages.values())
        print(
            f"{scale:>6g} {events:>9,} {baseline:>10.1f} {stages['ingest']:>9.1f} {stages['clean']:>8.1f} "
            f"{stages['features']:>7.1f} {total:>8.1f} {total / baseline:>10.1f}x"
        )
    print("daily run: the last day's files into the loaded tables (incremental gold)")
    for scale, _, _, _, baseline, stages in rows:
        total = sum(stages.values())
        print(
            f"{scale:>6g} {'':>9} {baseline:>10.1f} {stages['ingest']:>9.1f} {stages['clean']:>8.1f} "
            f"{stages['features']:>7.1f} {total:>8.1f} {total / baseline:>10.1f}x"
        )
    first, last = rows[0], rows[-1]
    growth = sum(last[3].values()) / sum(first[3].values())
    print(
        f"first-load time at {last[0]:g}x over {first[0]:g}x input: {growth:.2f}x "
        f"(events {last[1] / first[1]:.2f}x)"
    )


if __name__ == "__main__":
    main()
