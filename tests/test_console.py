"""What reaches the console: a line when a stage starts and one when it ends, warnings with an
action, never a traceback or the configuration; everything else goes to the run's log file."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shoprec import console

EXE = Path(sys.executable).parent / "shoprec"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.spark
def test_a_stage_shows_its_lines_and_leaves_the_rest_to_its_log_file(tmp_path: Path) -> None:
    small = ["--set", "generator.users=60", "--set", "generator.items=30", "--set", "generator.days=3"]
    done = _run("generate", "--set", f"paths.root={tmp_path}", *small)
    assert done.returncode == 0, done.stderr
    # the JVM itself announces the vector API module Spark 4 enables, before any logger exists
    jvm = "WARNING: Using incubator modules: jdk.incubator.vector"
    shown = [line for line in (done.stdout + done.stderr).splitlines() if line != jvm]
    assert not [line for line in shown if "Traceback" in line or "WARN" in line], shown
    assert not [line for line in shown if "shuffle_partitions" in line], (
        "the configuration reached the console"
    )
    err = [line for line in done.stderr.splitlines() if line != jvm]
    assert re.fullmatch(r"generate\s+started", err[1]), err  # after the line naming the log file
    assert re.fullmatch(r"generate\s+done \(\d+ s\)", err[-1]), err
    assert len(shown) <= 5, shown
    # the first line names the log file and the configuration, which hold what the console did not
    log_file, config_file = re.findall(r"(\S+\.log), configuration (\S+\.yaml)", err[0])[0]
    assert "shuffle_partitions" in Path(config_file).read_text()
    assert "INFO shoprec" in Path(log_file).read_text()

    verbose = _run("generate", "-v", "--set", f"paths.root={tmp_path}", *small)
    assert verbose.returncode == 0
    assert "INFO shoprec" in verbose.stderr  # -v: every record on the console too


def test_the_console_filter_keeps_stage_lines_and_warnings_only(capsys: pytest.CaptureFixture[str]) -> None:
    console.configure(verbose=False)
    logging.getLogger("shoprec.some.module").info("an internal detail")
    logging.getLogger("shoprec.some.module").warning("a warning with an action")
    with console.stage("demo") as st:
        st.summary = "3 rows in, 2 out"
    err = capsys.readouterr().err.splitlines()
    assert "an internal detail" not in "\n".join(err)
    assert "WARNING shoprec.some.module: a warning with an action" in err
    assert re.fullmatch(r"demo\s+started", err[1]) and re.fullmatch(
        r"demo\s+3 rows in, 2 out \(0 s\)", err[2]
    )
    with pytest.raises(RuntimeError), console.stage("broken"):
        raise RuntimeError("boom")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and re.fullmatch(r"broken\s+started", err[0])  # no end line for a failed stage


def test_a_malformed_date_is_one_line_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from shoprec.cli import main

    for bad in ("2026-02-30", "02/01/2026", "0"):
        assert main(["features", "--date", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        want = f"shoprec features: configuration error: --date {bad!r}: expected a day as YYYY-MM-DD"
        assert len(err) == 1 and err[0].startswith(want), err
