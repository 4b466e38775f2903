"""``shoprec stream``: micro-batches of new event files through clean, gold and scoring, exactly once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from conftest import TINY_SCORING, TINY_TRAINING, small_cfg
from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig, from_dict
from shoprec.etl import rules as R
from shoprec.streaming.job import run
from shoprec.training.job import train

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.e2e]

#: Columns that say when a row was written, not what it holds.
WHEN = {S.GENERATED_AT, S.QUARANTINED_AT, S.INGEST_TIME, "started_at", "finished_at", "lag_seconds"}


@pytest.fixture(scope="module")
def trained(
    spark: SparkSession,
    small_shop: ShoprecConfig,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> ShoprecConfig:
    """A copy of the small shop with a champion model (the stream scores with it)."""
    root = tmp_path_factory.mktemp("stream-shop")
    shutil.copytree(small_shop.paths.root, root, dirs_exist_ok=True)
    cfg = small_cfg(
        root,
        tiny_model_dir,
        evaluation={"ks": [10], "models": []},
        training={**TINY_TRAINING, "experiment": "stream", "registered_model": "stream-ranker"},
        scoring=TINY_SCORING,
        stream={"trigger": "availableNow", "max_files_per_trigger": 1},
    )
    train(spark, cfg)
    return cfg


def _new_events(spark: SparkSession, cfg: ShoprecConfig) -> tuple[list[list[str]], dict[str, str]]:
    """Two batches of raw event lines for existing users and items (after the data's end), each
    with an unknown item and a line cut off mid-write; and event id → where it must land."""
    events = delta.read(spark, cfg.table("bronze_events")).where(F.col(S.USER_ID).rlike("^cust-[0-9]+$"))
    last = str(delta.read(spark, cfg.table("silver_events")).agg(F.max(S.EVENT_TIME)).first()[0])
    per_user = events.groupBy(S.USER_ID).count().where("count BETWEEN 5 AND 60")
    users = [r[0] for r in per_user.orderBy(S.USER_ID).limit(6).collect()]
    catalog = delta.read(spark, cfg.table("silver_catalog")).select(S.ITEM_ID).orderBy(S.ITEM_ID)
    items = [r[0] for r in catalog.limit(8).collect()]
    expected: dict[str, str] = {}
    batches = []
    for f in range(2):
        lines = []
        for i, user in enumerate(users[f * 3 : f * 3 + 3]):
            for j in range(3):
                eid = f"stream-{f}-{i}-{j}"
                kind = "purchase" if j == 2 else "view"
                row = {
                    "event_id": eid,
                    "event_type": kind,
                    "event_time": f"{last[:10]}T23:5{f}:{i}{j}Z",
                    "user_id": user,
                    "session_id": f"s-{f}-{i}",
                    "item_id": items[(i + j + f) % len(items)],
                    "channel": "web",
                }
                if kind == "purchase":
                    row.update(price=9.5, quantity=1, currency="EUR")
                lines.append(json.dumps(row))
                expected[eid] = "silver"
        bad = f"bad-{f}"
        row = {"event_id": bad, "event_type": "view", "event_time": f"{last[:10]}T23:59:00Z"}
        lines.append(json.dumps({**row, "user_id": users[0], "item_id": "no-such-item", "channel": "web"}))
        expected[bad] = R.UNKNOWN_ITEM
        lines.append('{"event_id": "cut-off", "event_ty')
        batches.append(lines)
    return batches, expected


def _new_files(spark: SparkSession, cfg: ShoprecConfig, folder: Path) -> dict[str, str]:
    """:func:`_new_events` as two files under ``folder``, the first older than the second."""
    batches, expected = _new_events(spark, cfg)
    last = str(delta.read(spark, cfg.table("silver_events")).agg(F.max(S.EVENT_TIME)).first()[0])
    base = time.time() - 100
    for f, lines in enumerate(batches):
        path = folder / f"event_date={last[:10]}" / f"stream-{f}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        os.utime(path, (base + 10 * f, base + 10 * f))  # arrival order: file 0, then file 1
    return expected


def _state(spark: SparkSession, cfg: ShoprecConfig) -> dict[str, list[tuple[object, ...]]]:
    """What the stream writes, each table's rows sorted, without its write times; the lake's root
    and the query's id (which names its batches) written the same way in every copy."""
    root = str(Path(cfg.paths.root))
    query = re.compile(r"stream-[0-9a-f]{8}-")

    def same(v: object) -> str:
        return query.sub("stream-", str(v).replace(root, "<root>"))

    out = {}
    tables = ("bronze_events", "silver_events", "quarantine_events", "gold_sequences", "gold_user_profiles")
    for name in (*tables, "gold_interactions", "recommendations", "run_metrics", "stream_metrics"):
        df = delta.read(spark, cfg.table(name))
        if name == "run_metrics":
            df = df.drop(S.RUN_ID, S.RUN_TIME)
        if name == "stream_metrics":
            df = df.drop("query_id")
        df = df.drop(*[c for c in df.columns if c in WHEN])
        out[name] = sorted((tuple(same(v) for v in r) for r in df.collect()), key=str)
    return out


def _commits(table: str) -> int:
    return len(list(Path(table, "_delta_log").glob("*.json")))


def test_a_stream_killed_mid_batch_and_restarted_equals_an_uninterrupted_one(
    spark: SparkSession, trained: ShoprecConfig, tmp_path: Path
) -> None:
    """New files under the raw events folder, one micro-batch each: bad rows are quarantined with
    their rule, the batch's users get new lists with reasons. A real ``shoprec stream`` killed
    right after its second batch's silver commit (gold, scoring and the MERGE into recommendations
    still to come) and started again from its checkpoint leaves every table as an uninterrupted
    stream does: nothing lost or doubled."""
    settings = trained.to_dict()
    settings.pop("env")
    settings["spark"]["shuffle_partitions"] = int(spark.conf.get("spark.sql.shuffle.partitions") or 2)
    # new files arrive in a folder of their own: the copied ingest log names the original root's
    # files, which the copies' raw folders would otherwise hold again under new paths
    settings["paths"]["raw"] = "${root}/incoming"
    base = tmp_path / "base"
    shutil.copytree(trained.paths.root, base)

    def at(root: Path) -> dict[str, Any]:
        return json.loads(
            json.dumps({**settings, "paths": {**settings["paths"], "root": str(root)}}, default=str)
        )

    whole_root = tmp_path / "whole"
    shutil.copytree(base, whole_root)
    whole = from_dict(at(whole_root))
    expected = _new_files(spark, whole, Path(whole.path("raw")) / "events")
    done = run(spark, whole)
    assert len(done.batches) == 2, [b.batch for b in done.batches]
    assert all(b.input_rows == 11 and b.silver_rows == 9 and b.quarantined_rows == 2 for b in done.batches)
    assert all(b.users == 3 and len(b.lags) == 3 for b in done.batches)
    # where each batch's time went, step by step (bench/stream.py prints it)
    every = {"bronze", "silver", "gold", "arrivals", "shared", "score", "metrics"}
    assert all(every <= b.steps.keys() and sum(b.steps.values()) > 0 for b in done.batches)

    silver = {r[0] for r in delta.read(spark, whole.table("silver_events")).select(S.EVENT_ID).collect()}
    assert {e for e, fate in expected.items() if fate == "silver"} <= silver
    quarantine = delta.read(spark, whole.table("quarantine_events")).where(
        F.col(S.INGEST_BATCH).startswith("stream-")
    )
    rules = sorted(r[0] for r in quarantine.select(S.RULE).collect())
    assert rules == sorted([R.UNKNOWN_ITEM, R.UNKNOWN_ITEM, R.MALFORMED_RECORD, R.MALFORMED_RECORD])
    metrics = delta.read(spark, whole.table("run_metrics")).where(F.col(S.INGEST_BATCH).startswith("stream-"))
    assert metrics.where(F.col(S.RECONCILED)).count() == 2
    # each batch's users got new lists, each row with its reason; no one else was re-scored
    recs = delta.read(spark, whole.table("recommendations"))
    for b in done.batches:
        listed = recs.where(F.col(S.RUN_ID) == b.run_id)
        assert listed.select(S.USER_KEY).distinct().count() == 3
        assert listed.where(F.col(S.REASON).isNull() | F.col(f"{S.REASON}.text").isNull()).count() == 0
    rescored = recs.where(F.col(S.RUN_ID).isin(*[b.run_id for b in done.batches]))
    assert rescored.select(S.USER_KEY).distinct().count() == 6
    # gold: the batches' users' profiles folded in; every other user's left exactly as it was

    def profiles(cfg: ShoprecConfig) -> dict[str, Any]:
        serving = delta.read(spark, cfg.table("gold_user_profiles")).where(F.col(S.SPLIT) == S.SERVING)
        return {r[S.USER_KEY]: r for r in serving.collect()}

    before, after = profiles(from_dict(at(base))), profiles(whole)
    assert {u for u, r in after.items() if r != before.get(u)} == {
        r[0] for r in rescored.select(S.USER_KEY).distinct().collect()
    }
    bronze = delta.read(spark, whole.table("bronze_events"))
    assert bronze.where(F.col(S.INGEST_BATCH).startswith("stream-")).count() == 22
    assert bronze.groupBy(S.EVENT_ID, S.SOURCE_FILE).count().where("count > 1").count() == 0
    again = run(spark, whole)
    assert again.batches == [], "a restart with nothing new does nothing"
    want = _state(spark, whole)

    killed_root = tmp_path / "killed"
    shutil.copytree(base, killed_root)
    killed = from_dict(at(killed_root))
    _new_files(spark, killed, Path(killed.path("raw")) / "events")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "t.yaml").write_text(yaml.safe_dump(at(killed_root)))
    cmd = [sys.executable, "-m", "shoprec.cli", "stream", "--env", "t", "--conf-dir", str(conf)]
    repo = Path(__file__).resolve().parents[1]
    silver_table = killed.table("silver_events")
    start = _commits(silver_table)
    proc = subprocess.Popen(
        cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 600
    while _commits(silver_table) < start + 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _commits(silver_table) == start + 2, "killed right after the second batch's silver commit"
    stream_metrics = delta.read(spark, killed.table("stream_metrics"))
    assert stream_metrics.count() == 1, "the second batch was cut off before it finished"
    rerun = subprocess.run(cmd, cwd=repo, capture_output=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    got = _state(spark, killed)
    assert got.keys() == want.keys()
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"tables that differ from the uninterrupted stream: {differ}"

    # the daily features run after the stream: every batch is folded in already, yet it refreshes
    # what the stream left as it was (item features, everyone's profiles) as of the newest event
    from shoprec.features.job import build_gold

    daily = build_gold(spark, whole)
    assert daily.mode == "serving refreshed" and daily.new_batches == 0
    newest = delta.read(spark, whole.table("silver_events")).agg(F.max(S.EVENT_TIME)).first()[0]
    for table in ("gold_item_features", "gold_user_profiles"):
        serving = delta.read(spark, whole.table(table)).where(F.col(S.SPLIT) == S.SERVING)
        assert {r[0] for r in serving.select(S.AS_OF).distinct().collect()} == {
            newest + timedelta(microseconds=1)
        }, table
    assert build_gold(spark, whole).mode == "up to date"


@pytest.mark.kafka
def test_kafka_events_are_cleaned_and_their_users_rescored(
    spark: SparkSession, trained: ShoprecConfig, tmp_path: Path
) -> None:
    """A real single-node broker (KRaft, from Kafka's own jars) and a topic of JSON values in the
    raw contract, a value that is not JSON at all among them: good events reach silver and their
    users get new lists with reasons; the bad ones are quarantined with their rule and text; a
    restart from the checkpoint with nothing new does nothing."""
    from kafka_broker import broker

    settings = trained.to_dict()
    settings.pop("env")
    root = tmp_path / "lake"
    shutil.copytree(trained.paths.root, root)
    with broker(tmp_path / "kafka") as servers:
        settings["paths"]["root"] = str(root)
        settings["stream"] = {
            **settings["stream"],
            "source": "kafka",
            "kafka": {**settings["stream"]["kafka"], "bootstrap_servers": servers, "topic": "shop-events"},
        }
        cfg = from_dict(json.loads(json.dumps(settings, default=str)))
        batches, expected = _new_events(spark, cfg)
        values = [*batches[0], *batches[1], "not json at all"]
        sent = spark.createDataFrame([(v,) for v in values], "value string")
        sent.write.format("kafka").option("kafka.bootstrap.servers", servers).option(
            "topic", "shop-events"
        ).save()
        done = run(spark, cfg)
        assert sum(b.input_rows for b in done.batches) == len(values)
        silver = delta.read(spark, cfg.table("silver_events")).where(
            F.col(S.INGEST_BATCH).startswith("stream-")
        )
        assert {r[0] for r in silver.select(S.EVENT_ID).collect()} == {
            e for e, fate in expected.items() if fate == "silver"
        }
        quarantine = delta.read(spark, cfg.table("quarantine_events")).where(
            F.col(S.INGEST_BATCH).startswith("stream-")
        )
        rules = sorted(r[0] for r in quarantine.select(S.RULE).collect())
        # the two cut-off values are the same text: one is an exact duplicate, de-duplicated
        assert rules == sorted([R.UNKNOWN_ITEM] * 2 + [R.MALFORMED_RECORD] * 2)
        assert sum(b.deduplicated_rows for b in done.batches) == 1
        assert "not json at all" in {r[0] for r in quarantine.select(S.RECORD).collect()}
        assert all(
            r[0].startswith("kafka://shop-events/") for r in quarantine.select(S.SOURCE_FILE).collect()
        )
        recs = delta.read(spark, cfg.table("recommendations"))
        listed = recs.where(F.col(S.RUN_ID).isin(*[b.run_id for b in done.batches]))
        assert listed.select(S.USER_KEY).distinct().count() == 6
        assert listed.where(F.col(f"{S.REASON}.text").isNull()).count() == 0
        assert all(0 <= lag < 600 for b in done.batches for lag in b.lags) and any(
            b.lags for b in done.batches
        )
        assert run(spark, cfg).batches == [], "restarted with nothing new: nothing happens"
