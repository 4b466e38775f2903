"""The Airflow DAG, in a real Airflow installed in its own virtual environment (``.airflow-venv``,
built by scripts/setup.sh from dags/requirements-airflow.lock): the DagBag imports cleanly, the
tasks run in pipeline order, and ``airflow dags test`` runs the whole DAG on local Spark, each task
a real ``spark-submit`` of ``jobs/<stage>.py`` on a tiny generated shop."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession

from conftest import tiny_pipeline_cfg
from shoprec import delta
from shoprec import schemas as S
from shoprec.datagen.job import generate
from shoprec.spark import fetch_jars

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = ROOT / ".airflow-venv" / "bin"
ORDER = ["ingest", "clean", "features", "train", "score", "evaluate", "promote"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An Airflow home with a migrated SQLite metadata database, as environment variables."""
    if not (AIRFLOW / "airflow").is_file():
        pytest.fail(f"{AIRFLOW / 'airflow'} is missing: run scripts/setup.sh")
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(home)),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    subprocess.run([str(AIRFLOW / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    return env


def _json_line(text: str) -> list[dict[str, str]]:
    """The JSON list an ``airflow ... -o json`` command prints after its log lines."""
    return list(json.loads([line for line in text.splitlines() if line.startswith("[{")][-1]))


def _in_airflow(code: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [str(AIRFLOW / "python"), "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_dagbag_imports_and_the_tasks_run_in_pipeline_order(airflow_home: dict[str, str]) -> None:
    found = _in_airflow(
        f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag({str(ROOT / "dags")!r})
dag = bag.dags["shoprec_daily"]
print(json.dumps({{
    "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
    "upstream": {{t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}},
    "retries": {{t.task_id: t.retries for t in dag.tasks}},
    "timeouts": {{t.task_id: t.execution_timeout.total_seconds() for t in dag.tasks}},
    "args": {{t.task_id: t.application_args for t in dag.tasks}},
    "apps": {{t.task_id: t.application for t in dag.tasks}},
    "schedule": str(getattr(dag.timetable, "_expression", dag.timetable)),
}}))
""",
        airflow_home,
    )
    assert found["errors"] == {}
    upstream = found["upstream"]
    assert isinstance(upstream, dict)
    assert set(upstream) == set(ORDER)
    for before, after in itertools.pairwise(ORDER):
        assert upstream[after] == [before]
    assert upstream["ingest"] == []
    assert all(r >= 1 for r in found["retries"].values())  # type: ignore[union-attr]
    assert all(0 < t <= 8 * 3600 for t in found["timeouts"].values())  # type: ignore[union-attr]
    for task, args in found["args"].items():  # type: ignore[union-attr]
        assert args[args.index("--date") + 1] == "{{ ds }}", task
        assert Path(found["apps"][task]) == ROOT / "jobs" / f"{task}.py"  # type: ignore[index]
    assert "0 0 * * *" in str(found["schedule"])  # @daily


@pytest.mark.spark
@pytest.mark.e2e
def test_airflow_dags_test_runs_the_pipeline_on_local_spark(
    spark: SparkSession, airflow_home: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg = tiny_pipeline_cfg(tmp_path / "lake", tiny_model_dir, seed=4, key_env="SHOPREC_DAG_KEY")
    generate(spark, cfg)
    settings = cfg.to_dict()
    settings.pop("env")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "dagtest.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(settings, default=str))))
    day = (cfg.generator.start_date + timedelta(days=cfg.generator.days - 1)).isoformat()
    python = str(Path(sys.executable))
    env = {
        **airflow_home,
        # spark-submit from the pipeline's environment; its Python runs the drivers and workers
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
        "AIRFLOW_CONN_SPARK_LOCAL": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        "SHOPREC_SPARK_CONN": "spark_local",
        "SHOPREC_ENV": "dagtest",
        "SHOPREC_CONF_DIR": str(conf),
        "SHOPREC_JARS": ",".join(fetch_jars(cfg.spark)),
        "SHOPREC_DAG_KEY": "dag-test-key",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    done = subprocess.run(
        [str(AIRFLOW / "airflow"), "dags", "test", "shoprec_daily", day],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    airflow = str(AIRFLOW / "airflow")
    runs = subprocess.run(
        [airflow, "dags", "list-runs", "shoprec_daily", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    (run,) = _json_line(runs.stdout)
    assert run["state"] == "success", log[-5000:]
    states = subprocess.run(
        [airflow, "tasks", "states-for-dag-run", "shoprec_daily", run["run_id"], "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    tasks = _json_line(states.stdout)
    assert {t["task_id"]: t["state"] for t in tasks} == dict.fromkeys(ORDER, "success")
    recs = delta.read(spark, cfg.table("recommendations"))
    assert recs.where("model = 'shoprec' AND scenario = 'app'").count() > 0
    metrics = delta.read(spark, cfg.table("eval_metrics"))
    assert metrics.where(f"{S.MODEL} = 'popularity'").count() > 0
    assert delta.read(spark, cfg.table("bronze_events")).select(S.EVENT_DATE).distinct().count() == 6
