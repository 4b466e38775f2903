"""The command line: stages listed, and mistakes end in one line that names the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shoprec.cli import STAGES, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for stage in STAGES:
        assert stage in out


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_has_help_with_an_example(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([stage, "--help"])
    assert f"example: shoprec {stage}" in capsys.readouterr().out


def test_wrong_environment_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--env", "prod"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "environment 'prod'" in err[0] and "available: cluster, databricks, local" in err[0]


def test_bad_override_names_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--set", "generator.users=-5"]) == 2
    assert "generator.users" in capsys.readouterr().err


def test_job_files_are_thin_and_point_at_real_stages() -> None:
    for job in (ROOT / "jobs").glob("*.py"):
        text = job.read_text()
        assert len(text.splitlines()) <= 25, job
        assert f'run_stage("{job.stem}")' in text, job
        assert job.stem in STAGES


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "shoprec"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "generate" in out


def test_generate_scale_flag_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--scale", "0"]) == 2  # scale must be > 0: refused before Spark starts
    assert "generator.scale" in capsys.readouterr().err


@pytest.mark.spark
def test_a_missing_table_is_one_line_naming_the_stage_that_writes_it(
    spark: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--set", f"paths.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the log lines: one line, the stage and the fix
    assert last.startswith("shoprec evaluate: table gold_")
    assert "does not exist yet" in last and "run `shoprec features --env local` first" in last


def test_promote_without_a_registered_model_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["promote", "--set", f"paths.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("shoprec promote: no versions of shoprec-ranker") and "run `shoprec train`" in last


def test_the_processing_date_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "--date", "2026-13-45"]) == 2
    assert "--date '2026-13-45': expected a day as YYYY-MM-DD" in capsys.readouterr().err
