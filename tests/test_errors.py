"""Problems a user can fix end in one line that names the table, file or key and the fix, with
exit code 2, whichever stage meets them; never in a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoprec.cli import main

pytestmark = pytest.mark.spark


def _one_line(capsys: pytest.CaptureFixture[str], stage: str, *says: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"shoprec {stage}: "), err
    for text in says:
        assert text in last, last
    return last


def test_a_model_directory_without_its_ranker(
    spark: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "retriever-v7"
    model.mkdir()
    assert main(["score", "--set", f"paths.root={tmp_path}", "--set", f"scoring.model_path={model}"]) == 2
    _one_line(capsys, "score", "has no ranker", str(model), "shoprec train")


def test_a_table_location_that_holds_no_table(
    spark: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "not-the-silver-table"
    wrong.mkdir()
    code = main(["features", "--set", f"paths.root={tmp_path}", "--set", f"tables.silver_events={wrong}"])
    assert code == 2
    _one_line(capsys, "features", "silver_events", "shoprec clean")


def test_a_report_of_an_evaluation_that_never_ran(
    spark: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--set", f"paths.root={tmp_path}"]) == 2
    _one_line(capsys, "report", "eval_metrics")


def test_an_evaluation_of_a_split_that_is_empty(
    spark: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gold tables that exist but hold no rows of the split (features never ran on any data)."""
    from pyspark.sql import SparkSession

    from shoprec import delta
    from shoprec.config import load_config
    from shoprec.features.job import GOLD_TABLES

    assert isinstance(spark, SparkSession)
    cfg = load_config("local", [f"paths.root={tmp_path}"])
    for name, (schema, parts) in GOLD_TABLES.items():
        delta.ensure_table(spark, cfg.table(name), schema, parts)
    assert main(["evaluate", "--set", f"paths.root={tmp_path}"]) == 2
    _one_line(capsys, "evaluate", "gold/item_features", "no 'test' split", "shoprec features")
