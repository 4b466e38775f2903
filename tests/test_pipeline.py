"""The main job end to end on a small generated shop, run twice: same tables, same counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import from_dict
from shoprec.pipeline import run_pipeline

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.e2e]


def test_pipeline_writes_bronze_tables_and_is_idempotent(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPREC_PSEUDONYM_KEY", "pipeline-test-key")
    cfg = from_dict(
        {
            "paths": {"root": str(tmp_path)},
            "generator": {"users": 150, "items": 80, "days": 5, "bad_row_rate": 0.02, "users_per_block": 100},
            "evaluation": {"models": ["popularity"]},
        }
    )
    result = run_pipeline(spark, cfg)
    first = {t.name: t.rows for t in result.tables}
    assert result.report is not None and result.report.is_file()
    assert "popularity" in result.headline and first["recommendations"] > 0
    manifest_events = spark.read.text(f"{cfg.path('raw')}/events").count()
    assert first["bronze_events"] == manifest_events, "every raw line is a bronze row, bad ones too"
    events = delta.read(spark, cfg.table("bronze_events"))
    assert events.where(f"{S.CORRUPT_RECORD} IS NOT NULL").count() > 0, (
        "malformed lines kept, with their text"
    )
    assert events.where(f"{S.SOURCE_FILE} IS NULL OR {S.INGEST_BATCH} IS NULL").count() == 0

    assert first["silver_events"] + first["quarantine_events"] < first["bronze_events"], (
        "some were duplicates"
    )
    assert first["silver_catalog"] > 0

    second = {t.name: t.rows for t in run_pipeline(spark, cfg).tables}
    assert second == first
