"""Generator scaling: throughput and per-block memory as the shop grows.

Baseline: scale 1 (the demo's users and items). For each larger scale it prints the ratio of
events per second through Spark, and of the peak Python memory one block takes (measured in this
process with tracemalloc, the same block size at every scale). Flat memory and flat-or-better
throughput are what "partitions are generated independently" should buy.

Per core: events per CPU-second of one process making blocks (the events alone, then the whole
partition as the exporter writes it, defects and JSON lines included), and, through Spark, the
generator's time against a plain Parquet read → write of the same events in the same run.

    .venv/bin/python bench/generate_scale.py --scales 1 4 16
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
import tracemalloc

from pyspark.sql import SparkSession

from shoprec.config import GeneratorConfig, from_dict
from shoprec.datagen import shop
from shoprec.datagen.job import event_partition, generate
from shoprec.spark import get_spark

log = logging.getLogger("bench.generate_scale")


def block_peak_mib(gen: object) -> float:
    shop.item_core.cache_clear()
    shop.item_core(gen)  # shared catalog numbers: built once per worker, not per block
    tracemalloc.start()
    shop.events_block(gen, 0)  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def per_core_rates(gen: GeneratorConfig, blocks: int = 4) -> tuple[float, float]:
    """Events per CPU-second of this process: (events alone, whole exported partitions)."""
    shop.item_core(gen)
    blocks = min(blocks, shop.n_user_blocks(gen))  # the shop's own blocks, none past its users
    rates = []
    for fn in (shop.events_block, event_partition):
        rows, t0 = 0, time.process_time()
        for b in range(blocks):
            rows += len(fn(gen, b))
        rates.append(rows / (time.process_time() - t0))
    return rates[0], rates[1]


def parquet_copy_seconds(spark: SparkSession, events_dir: str, fmt: str, out: str) -> float:
    """A plain read → write of the generated events: the I/O floor the generator is set against."""
    frame = spark.read.parquet(events_dir) if fmt == "parquet" else spark.read.text(events_dir)
    started = time.perf_counter()
    frame.write.mode("overwrite").parquet(out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 4, 16])
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spark = get_spark(from_dict({}).spark)
    rows = []
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as root:
            cfg = from_dict(
                {
                    "paths": {"root": root},
                    "generator": {
                        "users": args.users,
                        "items": 600,
                        "scale": scale,
                        "users_per_block": 1000,
                        "format": "parquet",
                    },
                }
            )
            started = time.perf_counter()
            result = generate(spark, cfg)
            seconds = time.perf_counter() - started
            copy = parquet_copy_seconds(spark, result.events_dir, cfg.generator.format, f"{root}/copy")
            peak = block_peak_mib(dataclasses.replace(cfg.generator))
            rows.append((scale, result.event_rows, seconds, result.event_rows / seconds, peak, copy))
    base = rows[0]
    header = ("scale", "events", "seconds", "events/s", "vs base", "block MiB", "vs base", "vs copy")
    print("{:>6} {:>10} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8}".format(*header))
    for scale, events, seconds, rate, peak, copy in rows:
        print(
            f"{scale:>6g} {events:>10,} {seconds:>8.1f} {rate:>9,.0f} {rate / base[3]:>7.2f}x"
            f" {peak:>9.1f} {peak / base[4]:>7.2f}x {seconds / copy:>7.2f}x"
        )
    gen = from_dict({"generator": {"users": args.users, "items": 600, "bad_row_rate": 0.01}}).generator
    events_only, exported = per_core_rates(gen)
    print(
        f"per core (CPU time, one process): events {events_only:,.0f}/s,"
        f" exported JSON partitions {exported:,.0f}/s"
    )


if __name__ == "__main__":
    main()
