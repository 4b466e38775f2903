"""Stream freshness and throughput: events replayed at a fixed rate, each user's new list timed.

Starts from a lake with a champion model (by default the demo's: run ``make demo`` first), copied
to a scratch folder so the original is untouched. A replayer writes ``--rate`` events per second
(one file per second, events of existing users on existing items, after the data's end) into the
raw events folder for ``--minutes``, while ``shoprec stream`` runs in this process with its
``processingTime`` trigger. For every re-scored user of every micro-batch, ``stream_metrics``
holds the seconds from the arrival of the user's newest event (its file's modification time) to
the MERGE of their new lists. Printed: the lag's p50 / p95 / max over the run and over its first
and last thirds (no growth: the last third's p95 is not above the first's by more than noise),
the events per second the stream took in, and micro-batch sizes and times.

Baseline, in the same run: the daily batch path over the same files (ingest, clean, features,
score of every user), whose wall time is how stale the daily run leaves a list; printed as the
ratio of that time to the stream's p95 lag.

    .venv/bin/python bench/stream.py --env local --rate 200 --minutes 10
    .venv/bin/python bench/stream.py --env local --rates 50 200 400 --minutes 3   # the highest rate
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig, from_dict, load_config
from shoprec.etl.bronze import ingest_all
from shoprec.etl.silver import clean_all
from shoprec.features.job import build_gold
from shoprec.scoring.job import score
from shoprec.spark import get_spark
from shoprec.streaming import job as stream

log = logging.getLogger("bench.stream")


def _population(spark: SparkSession, cfg: ShoprecConfig) -> tuple[list[str], list[str], str]:
    """Raw user ids with a few events, catalog items, and the data's last day."""
    bronze = delta.read(spark, cfg.table("bronze_events")).where(F.col(S.USER_ID).rlike("^cust-[0-9]+$"))
    users = bronze.groupBy(S.USER_ID).count().where("count BETWEEN 3 AND 200").select(S.USER_ID)
    items = delta.read(spark, cfg.table("silver_catalog")).select(S.ITEM_ID)
    last = str(delta.read(spark, cfg.table("silver_events")).agg(F.max(S.EVENT_TIME)).first()[0])[:10]
    return [r[0] for r in users.collect()], [r[0] for r in items.collect()], last


class Replayer(threading.Thread):
    """Writes ``rate`` events per second, one file per second, for ``seconds``."""

    def __init__(self, folder: Path, users: list[str], items: list[str], day: str, rate: int, seconds: int):
        super().__init__(daemon=True)
        self.folder, self.users, self.items, self.day = folder / f"event_date={day}", users, items, day
        self.rate, self.seconds = rate, seconds
        self.files: list[Path] = []
        self.events = 0
        self.behind = 0.0  # the most the writer ever fell behind its schedule, seconds

    def run(self) -> None:
        rng = random.Random(7)
        self.folder.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        for second in range(self.seconds):
            due = start + second
            time.sleep(max(0.0, due - time.monotonic()))
            self.behind = max(self.behind, time.monotonic() - due)
            lines = []
            for n in range(self.rate):
                kind = rng.choices(["view", "click", "add_to_cart", "purchase"], [70, 20, 7, 3])[0]
                row: dict[str, Any] = {
                    "event_id": f"replay-{second}-{n}",
                    "event_type": kind,
                    "event_time": f"{self.day}T23:{(second // 60) % 60:02d}:{second % 60:02d}Z",
                    "user_id": rng.choice(self.users),
                    "session_id": f"r-{second}",
                    "item_id": rng.choice(self.items),
                    "channel": "app",
                }
                if kind == "purchase":
                    row.update(price=round(rng.uniform(5, 80), 2), quantity=1, currency="EUR")
                lines.append(json.dumps(row))
            tmp = self.folder / f".part-{second:05d}.json.tmp"
            tmp.write_text("\n".join(lines) + "\n")
            final = self.folder / f"part-{second:05d}.json"
            os.replace(tmp, final)  # a file appears whole: the source never sees half of one
            self.files.append(final)
            self.events += len(lines)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_rate(
    spark: SparkSession, base: ShoprecConfig, rate: int, minutes: float, interval: str
) -> dict[str, Any]:
    """One stream run at ``rate`` events/s on a scratch copy of the lake; its figures."""
    scratch = Path(tempfile.mkdtemp(prefix="shoprec-bench-stream-"))
    shutil.copytree(
        base.paths.root, scratch / "root", ignore=shutil.ignore_patterns("raw", "logs", "reports")
    )
    settings = base.to_dict()
    settings.pop("env")
    settings["paths"] = {**settings["paths"], "root": str(scratch / "root"), "raw": "${root}/incoming"}
    settings["stream"] = {**settings["stream"], "trigger": "processingTime", "interval": interval}
    settings["generator"] = {**settings["generator"], "enabled": False}
    cfg = from_dict(json.loads(json.dumps(settings, default=str)))
    users, items, day = _population(spark, cfg)
    (scratch / "root" / "incoming" / "events").mkdir(parents=True)
    replay = Replayer(Path(cfg.path("raw")) / "events", users, items, day, rate, int(minutes * 60))
    done = stream.StreamRun()
    query = stream.start(spark, cfg, done)
    started = time.monotonic()
    replay.start()
    replay.join()
    written = {str(p.name) for p in replay.files}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # until every file has been taken in
        logged = delta.read(spark, cfg.table("ingest_log")).where(F.col(S.SOURCE) == "events")
        taken = {Path(r[0]).name for r in logged.select(S.FILE_PATH).collect()}
        if written <= taken and not query.status["isTriggerActive"]:
            break
        time.sleep(2)
    drained = time.monotonic() - started
    query.stop()
    metrics = delta.read(spark, cfg.table("stream_metrics")).orderBy("epoch").collect()
    lags = [lag for r in metrics for lag in r["lag_seconds"]]
    third = max(1, len(metrics) // 3)
    early = [lag for r in metrics[:third] for lag in r["lag_seconds"]]
    late = [lag for r in metrics[-third:] for lag in r["lag_seconds"]]
    seconds = [(r["finished_at"] - r["started_at"]).total_seconds() for r in metrics]
    out = {
        "rate": rate,
        "events": replay.events,
        "batches": len(metrics),
        "events_per_batch": _percentile([float(r["input_rows"]) for r in metrics], 50),
        "batch_seconds_p50": _percentile(seconds, 50),
        "batch_seconds_max": max(seconds) if seconds else float("nan"),
        "lag_p50": _percentile(lags, 50),
        "lag_p95": _percentile(lags, 95),
        "lag_max": max(lags) if lags else float("nan"),
        "lag_p95_first_third": _percentile(early, 95),
        "lag_p95_last_third": _percentile(late, 95),
        "taken_per_second": replay.events / drained,
        "writer_behind_s": replay.behind,
        "steps": _steps(done.batches),
        "cfg": cfg,
        "scratch": scratch,
    }
    return out


def _steps(batches: list[stream.BatchResult]) -> dict[str, tuple[float, float, float]]:
    """Per step of a micro-batch: its p50 and max seconds over the run's batches, and the first
    batch's (which also computes the shared signals)."""
    names = dict.fromkeys(k for b in batches for k in b.steps)
    return {
        k: (
            _percentile([b.steps.get(k, 0.0) for b in batches], 50),
            max(b.steps.get(k, 0.0) for b in batches),
            batches[0].steps.get(k, 0.0),
        )
        for k in names
    }


def batch_baseline(spark: SparkSession, base: ShoprecConfig, streamed: ShoprecConfig, scratch: Path) -> float:
    """The daily path over the files the stream took, from the same starting lake: ingest, clean,
    features, score of every user. Its wall time, seconds."""
    root = scratch / "batch"
    shutil.copytree(base.paths.root, root, ignore=shutil.ignore_patterns("raw", "logs", "reports"))
    shutil.copytree(Path(streamed.path("raw")), root / "incoming")
    settings = streamed.to_dict()
    settings.pop("env")
    settings["paths"] = {**settings["paths"], "root": str(root), "raw": "${root}/incoming"}
    cfg = from_dict(json.loads(json.dumps(settings, default=str)))
    started = time.perf_counter()
    ingest_all(spark, cfg)
    clean_all(spark, cfg)
    build_gold(spark, cfg)
    score(spark, cfg)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="local")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--rate", type=int, default=200, help="events per second")
    parser.add_argument("--rates", type=int, nargs="*", default=None, help="several rates, one run each")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", default="5 seconds", help="the processingTime trigger")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    base = load_config(args.env, args.overrides)
    spark = get_spark(base.spark)
    results = []
    for rate in args.rates or [args.rate]:
        r = run_rate(spark, base, rate, args.minutes, args.interval)
        results.append(r)
        print(
            f"rate {rate:>5}/s: {r['events']:,} events in {r['batches']} micro-batches "
            f"(p50 {r['events_per_batch']:.0f} events, {r['batch_seconds_p50']:.1f}s each, max "
            f"{r['batch_seconds_max']:.1f}s); newest event -> new list: p50 {r['lag_p50']:.1f}s, "
            f"p95 {r['lag_p95']:.1f}s, max {r['lag_max']:.1f}s; p95 first third "
            f"{r['lag_p95_first_third']:.1f}s, last third {r['lag_p95_last_third']:.1f}s; taken in "
            f"{r['taken_per_second']:.0f} events/s (writer behind at most {r['writer_behind_s']:.2f}s)",
            flush=True,
        )
        print(
            "  per step, p50 / max / first batch (s): "
            + ", ".join(f"{k} {a:.1f}/{b:.1f}/{c:.1f}" for k, (a, b, c) in r["steps"].items()),
            flush=True,
        )
    last = results[-1]
    daily = batch_baseline(spark, base, last["cfg"], last["scratch"])
    print(
        f"baseline: the daily path over the same files took {daily:.0f}s (ingest, clean, features, "
        f"score of every user); stream p95 lag at {last['rate']}/s {last['lag_p95']:.1f}s: "
        f"{daily / last['lag_p95']:.1f}x",
        flush=True,
    )
    ok = [r["rate"] for r in results if r["lag_p95"] <= 60]
    print(f"highest rate with p95 <= 60s among those run: {max(ok) if ok else 'none'}")
    for r in results:
        shutil.rmtree(r["scratch"], ignore_errors=True)


if __name__ == "__main__":
    main()
