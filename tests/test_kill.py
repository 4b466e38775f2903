"""A pipeline killed at any point and run again ends with the same tables as one that never stopped.

The kill lands on an observed event, never after a sleep: right after the N-th Delta commit of the
run (any table's ``_delta_log``), once mid-generation (the catalog export written, the events not
yet) and once mid-write of a raw file (a task's part file open under ``_temporary``). Every table,
the ingest log and the run metrics included, is then compared with an uninterrupted run's.

The default tier kills mid-write of a raw file and at the first write of each table that marks work
as done (:data:`MARKERS`), four runs in all; ``SHOPREC_KILL_SWEEP=all`` adds mid-generation and
kills after each commit in turn (the slow sweep: a killed run and a re-run per commit, hours).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import MapType
from pyspark.testing import assertDataFrameEqual

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig, load_config
from shoprec.features.job import GOLD_TABLES
from shoprec.pipeline import DATA_TABLES

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.e2e]
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
TABLES = [*DATA_TABLES, *GOLD_TABLES, "ingest_log", "run_metrics"]
#: Columns that name the run, the time or the file, not the data: they differ between two lakes by
#: design (file paths hold the root and Spark's per-write file names; batch ids hash the paths).
VOLATILE = {
    S.INGEST_TIME,
    S.QUARANTINED_AT,
    S.INGEST_BATCH,
    S.SOURCE_FILE,
    S.BATCHES,
    S.FILE_PATH,
    S.FILE_MODIFIED,
    S.RUN_ID,
    S.RUN_TIME,
}
POLL_S = 0.005
log = logging.getLogger(__name__)
RUN_TIMEOUT_S = 600


def _command(root: Path) -> list[str]:
    cmd = [sys.executable, "-m", "shoprec.cli", "run", "--env", "local", "--set", f"paths.root={root}"]
    for s in SETTINGS:
        cmd += ["--set", s]
    return cmd


def _start(root: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHOPREC_PSEUDONYM_KEY": "kill-test"}
    return subprocess.Popen(
        _command(root), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def _run(root: Path) -> None:
    proc = _start(root)
    _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, err.decode()[-3000:]


def _is_commit(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".")


def _commits(root: Path) -> list[Path]:
    """Every Delta commit file under ``root``, oldest first."""
    files = [p for p in root.rglob("_delta_log/*.json") if _is_commit(p.name)]
    return sorted(files, key=lambda p: p.stat().st_mtime_ns)


@dataclass(frozen=True)
class KillPoint:
    """Where to kill: a predicate over the run's folder, checked every few milliseconds."""

    name: str
    reached: Callable[[Path], bool]


def _after_commits(n: int, logs: list[str]) -> Callable[[Path], bool]:
    def reached(root: Path) -> bool:
        total = 0
        for rel in logs:
            try:
                total += sum(1 for e in os.scandir(root / rel) if _is_commit(e.name))
            except FileNotFoundError:
                continue
        return total >= n

    return reached


def _catalog_exported(root: Path) -> bool:
    """Mid-generation: the catalog export is complete, the events' is not."""
    return (root / "raw/catalog/_SUCCESS").exists() and not (root / "raw/events/_SUCCESS").exists()


def _raw_file_open(root: Path) -> bool:
    """Mid-write of a raw file: a task's part file exists under the events export's ``_temporary``."""
    tmp = root / "raw/events/_temporary"
    return tmp.is_dir() and any(name.startswith("part-") for _, _, names in os.walk(tmp) for name in names)


def _kill_at(root: Path, point: KillPoint) -> None:
    proc = _start(root)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not point.reached(root):
        if proc.poll() is not None:
            raise AssertionError(f"{point.name}: the run ended before the kill point was reached")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{point.name}: not reached in {RUN_TIMEOUT_S}s")
        time.sleep(POLL_S)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM, mid-whatever it was doing
    proc.wait()


def _rows(df: DataFrame) -> DataFrame:
    """The table less its volatile columns, maps as sorted entry arrays (comparable as rows)."""
    df = df.drop(*[c for c in df.columns if c in VOLATILE])
    maps = [f.name for f in df.schema.fields if isinstance(f.dataType, MapType)]
    for name in maps:
        df = df.withColumn(name, F.array_sort(F.map_entries(name)))
    return df


def _tables(spark: SparkSession, cfg: ShoprecConfig) -> dict[str, DataFrame]:
    return {name: _rows(delta.read(spark, cfg.table(name))) for name in TABLES}


def _config(root: Path) -> ShoprecConfig:
    return load_config("local", [f"paths.root={root}"])


@dataclass(frozen=True)
class Reference:
    """The uninterrupted run: its tables, and its commits in the order they were made."""

    root: Path
    commits: list[str]  # ``table/_delta_log/NNN.json`` relative to the root, oldest first

    @property
    def logs(self) -> list[str]:
        return sorted({str(Path(c).parent) for c in self.commits})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    root = tmp_path_factory.mktemp("uninterrupted")
    _run(root)
    return Reference(root, [str(p.relative_to(root)) for p in _commits(root)])


#: The tables whose rows mark work as done: the ingest log (files loaded), the run metrics (batches
#: cleaned) and the gold state (batches folded in). A kill between work and its mark is where a
#: re-run can skip or repeat work.
MARKERS = ("lake/bronze/_ingest_log", "lake/ops/run_metrics", "lake/gold/user_state")


def _creates(commit: str) -> bool:
    return Path(commit).name == f"{0:020d}.json"


def _sample(commits: list[str]) -> list[int]:
    """1-based commit numbers for the default tier: each marker table's first data write (marked,
    the work after it not done yet), and the commit just before the gold state's (every gold
    table written, none of it marked)."""
    chosen: set[int] = set()
    for marker in MARKERS:
        writes = (i for i, c in enumerate(commits, start=1) if c.startswith(f"{marker}/") and not _creates(c))
        first = next(writes)
        chosen.add(first - 1 if marker == MARKERS[-1] else first)
    return sorted(chosen)


def _kill_points(ref: Reference) -> list[KillPoint]:
    sweep = os.environ.get("SHOPREC_KILL_SWEEP") == "all"
    points = [KillPoint("mid-write of a raw events file", _raw_file_open)]
    if sweep:
        points.append(KillPoint("mid-generation (catalog exported, events not)", _catalog_exported))
    numbers = range(1, len(ref.commits)) if sweep else _sample(ref.commits)
    for n in numbers:
        points.append(KillPoint(f"after commit {n} ({ref.commits[n - 1]})", _after_commits(n, ref.logs)))
    return points


def _differences(spark: SparkSession, killed: Path, clean: dict[str, DataFrame]) -> list[str]:
    out = []
    for name, df in _tables(spark, _config(killed)).items():
        try:
            assertDataFrameEqual(df, clean[name])
        except AssertionError as exc:
            out.append(f"{name}: {str(exc).splitlines()[0][:200]}")
    return out


def test_killed_at_each_point_then_rerun_equals_an_uninterrupted_run(
    spark: SparkSession, reference: Reference, tmp_path: Path
) -> None:
    clean = _tables(spark, _config(reference.root))
    assert clean["silver_events"].count() > 0 and clean["gold_user_state"].count() > 0
    failures = []
    for i, point in enumerate(_kill_points(reference)):
        root = tmp_path / f"k{i}"
        _kill_at(root, point)
        _run(root)
        found = _differences(spark, root, clean)
        log.info("kill point %d, %s: %s", i + 1, point.name, "; ".join(found) or "repaired")
        failures += [f"{point.name}: {d}" for d in found]
    assert not failures, "killed runs that a re-run did not repair:\n" + "\n".join(failures)
