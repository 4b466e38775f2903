"""A pipeline killed mid-write and run again ends with the same tables as one that never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig, load_config
from shoprec.features.job import GOLD_TABLES
from shoprec.pipeline import DATA_TABLES

pytestmark = [pytest.mark.spark, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "generator.users=300",
    "generator.items=120",
    "generator.days=6",
    "generator.users_per_block=150",
    "generator.bad_row_rate=0.02",
    "spark.shuffle_partitions=2",
    "evaluation.models=[]",
    "training.enabled=false",
]
TABLES = [*DATA_TABLES, *GOLD_TABLES]
#: Columns that name the run or the file, not the data: they differ between two lakes by design.
VOLATILE = {S.INGEST_TIME, S.QUARANTINED_AT, S.INGEST_BATCH, S.SOURCE_FILE, S.BATCHES}


def _run(root: Path, kill_after: float | None = None) -> int:
    env = {**os.environ, "SHOPREC_PSEUDONYM_KEY": "kill-test"}
    cmd = [sys.executable, "-m", "shoprec.cli", "run", "--env", "local", "--set", f"paths.root={root}"]
    for s in SETTINGS:
        cmd += ["--set", s]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    if kill_after is None:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-2000:]
        return 0
    time.sleep(kill_after)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM, mid-whatever it was doing
    proc.wait()
    return int(proc.returncode)


def _tables(spark: SparkSession, cfg: ShoprecConfig) -> dict[str, DataFrame]:
    out = {}
    for name in TABLES:
        df = delta.read(spark, cfg.table(name))
        out[name] = df.drop(*[c for c in df.columns if c in VOLATILE])
    return out


def test_killed_run_then_rerun_equals_an_uninterrupted_run(spark: SparkSession, tmp_path: Path) -> None:
    assert _run(tmp_path / "killed", kill_after=45.0) != 0, "the first run was killed, not finished"
    _run(tmp_path / "killed")
    _run(tmp_path / "clean")
    killed = _tables(spark, load_config("local", [f"paths.root={tmp_path / 'killed'}"]))
    clean = _tables(spark, load_config("local", [f"paths.root={tmp_path / 'clean'}"]))
    for name in TABLES:
        assertDataFrameEqual(killed[name], clean[name])
