"""Notebooks are Databricks source files that only call shoprec's library: checked statically, then
every notebook's cells run in order against local Spark, stage by stage and end to end.

``Widgets`` below is the test harness's stand-in for ``dbutils.widgets``: it records what each
notebook declares and answers ``get`` with the declared default unless the test sets a value.
"""

from __future__ import annotations

import ast
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession

from conftest import tiny_pipeline_cfg
from shoprec import delta
from shoprec import schemas as S
from shoprec.cli import STAGES
from shoprec.indexes import last_execution, single_partition_windows

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.py"))
#: The stage notebooks in pipeline order, then the end-to-end one.
ORDER = ["generate", "ingest", "clean", "features", "train", "score", "evaluate", "report", "promote"]
WIDGETS = {"env", "overrides", "processing_date"}
SEPARATOR = "# COMMAND ----------"


def cells(path: Path) -> list[str]:
    text = path.read_text()
    body = text.removeprefix("# Databricks notebook source\n")
    return [c.strip("\n") for c in body.split(f"\n{SEPARATOR}\n")]


class Widgets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.declared: dict[str, str] = {}

    def text(self, name: str, default: str, label: str = "") -> None:
        self.declared[name] = default

    def get(self, name: str) -> str:
        if name not in self.declared:
            raise KeyError(f"widget {name!r} read before it is declared")
        return self.values.get(name, self.declared[name])


class DbUtils:
    def __init__(self, values: dict[str, str]) -> None:
        self.widgets = Widgets(values)


def run_notebook(path: Path, values: dict[str, str]) -> dict[str, Any]:
    """Execute the notebook's cells in order; the namespace holds what the cells defined."""
    shown: list[Any] = []
    namespace: dict[str, Any] = {
        "dbutils": DbUtils(values),
        "display": shown.append,
        "displayHTML": shown.append,
        "__name__": "__main__",
    }
    for i, cell in enumerate(cells(path)):
        code = compile(cell, f"{path.name}[cell {i}]", "exec")
        exec(code, namespace)
    namespace["_shown"] = shown
    return namespace


def test_there_is_a_notebook_per_stage_and_an_end_to_end_one() -> None:
    assert {p.stem for p in NOTEBOOKS} == {*ORDER, "stream", "run_pipeline"}
    assert {*ORDER, "stream"} <= set(STAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_databricks_source_with_widgets_that_imports_only_shoprec(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# Databricks notebook source\n")
    parts = cells(path)
    assert len(parts) >= 3
    assert parts[0].startswith("# MAGIC %md"), "the first cell says what the notebook does"
    declared = set(re.findall(r'dbutils\.widgets\.text\("(\w+)"', text))
    assert declared == WIDGETS
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] == "shoprec" for a in node.names), ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] == "shoprec", ast.unparse(node)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            pytest.fail(f"{path.name} defines {node.name}: logic belongs in lib/shoprec")
    if path.stem in {*ORDER, "stream"}:
        assert f'"{path.stem}",' in text, "a stage notebook runs its own stage"


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.e2e
def test_every_notebook_runs_in_order_against_local_spark(
    spark: SparkSession,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = tiny_pipeline_cfg(tmp_path / "lake", tiny_model_dir, seed=5, key_env="SHOPREC_NOTEBOOK_KEY")
    settings = cfg.to_dict()
    settings.pop("env")
    settings["spark"]["shuffle_partitions"] = 2
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "nb.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("SHOPREC_CONF_DIR", str(conf))
    monkeypatch.setenv("SHOPREC_NOTEBOOK_KEY", "notebook-key")
    # all days but the last: the processing date holds the last day's exports back
    day = (cfg.generator.start_date + timedelta(days=cfg.generator.days - 2)).isoformat()
    values = {"env": "nb", "overrides": "scoring.retrieval_k=12; evaluation.ks=[10]"}
    for stage in ORDER:
        mark = last_execution(spark)
        run_notebook(NOTEBOOK_DIR / f"{stage}.py", {**values, "processing_date": day})
        # no stage numbered or sorted all its rows in one task (a window without a partitioning)
        assert single_partition_windows(spark, mark) == [], stage
        if stage == "ingest":
            days = delta.read(spark, cfg.table("bronze_events")).select(S.EVENT_DATE).distinct().count()
            assert days == cfg.generator.days - 1
    recs = delta.read(spark, cfg.table("recommendations"))
    assert recs.where("model = 'shoprec' AND scenario = 'app'").count() > 0
    assert list(Path(cfg.path("reports")).glob("*.html"))
    # end to end: the rest of the exports arrive, every stage runs again, the tables show
    ns = run_notebook(NOTEBOOK_DIR / "run_pipeline.py", values)
    assert ns["result"].report is not None and ns["result"].report.is_file()
    assert delta.read(spark, cfg.table("bronze_events")).select(S.EVENT_DATE).distinct().count() == 6
    assert len(ns["_shown"]) == 2


def test_the_bundle_names_only_stages_and_entry_points_that_exist() -> None:
    import tomllib

    root = NOTEBOOK_DIR.parent
    bundle = yaml.safe_load((root / "databricks.yml").read_text())
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    job = bundle["resources"]["jobs"]["shoprec_daily"]
    assert job["schedule"]["quartz_cron_expression"]
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert list(tasks) == ["ingest", "clean", "features", "train", "score", "evaluate", "promote"]
    previous = None
    for key, task in tasks.items():
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == "shoprec"
        assert wheel["entry_point"] in scripts
        stage = wheel["parameters"][0]
        assert stage == key and stage in STAGES
        assert "--date" in wheel["parameters"] and "--env" in wheel["parameters"]
        assert task["job_cluster_key"] in clusters
        assert task.get("max_retries", 0) >= 1 and task["timeout_seconds"] > 0
        deps = [d["task_key"] for d in task.get("depends_on", [])]
        assert deps == ([previous] if previous else [])
        previous = key
    assert "gpu" in clusters[tasks["train"]["job_cluster_key"]]["spark_version"]
    assert "gpu" not in clusters[tasks["score"]["job_cluster_key"]]["spark_version"]
    stream = bundle["resources"]["jobs"]["shoprec_stream"]
    assert stream["continuous"]["pause_status"] == "UNPAUSED"
    (task,) = stream["tasks"]
    assert task["python_wheel_task"]["parameters"][0] == "stream"
    assert task["job_cluster_key"] in {c["job_cluster_key"] for c in stream["job_clusters"]}
    assert bundle["artifacts"]["shoprec_wheel"]["build"] == "python -m build --wheel"
