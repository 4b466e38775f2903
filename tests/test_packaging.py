"""The wheel: built with ``python -m build``, it runs the jobs under the real ``spark-submit`` from
a Python that does not have shoprec installed (``--py-files``), and installs into a clean virtual
environment where ``shoprec --help`` works."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from shoprec import delta
from shoprec.config import from_dict
from shoprec.datagen.job import generate
from shoprec.spark import fetch_jars

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.spark]


def uv() -> str:
    """The pinned uv that scripts/setup.sh installed."""
    cache = Path(os.environ.get("SHOPREC_CACHE", Path.home() / ".cache" / "shoprec"))
    path = cache / "bootstrap" / "bin" / "uv"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run scripts/setup.sh")
    return str(path)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("shoprec-*.whl")
    return built


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtual environment with shoprec's locked dependencies but not shoprec itself."""
    env = tmp_path_factory.mktemp("bare-env") / "venv"
    subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(env)], check=True)
    subprocess.run(
        [uv(), "pip", "sync", "-q", "--python", str(env / "bin" / "python"), str(ROOT / "requirements.lock")],
        check=True,
    )
    yield env


def test_the_wheel_holds_the_package_and_its_configuration(wheel: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("cli", "config", "pipeline", "registry", "datagen/__init__", "scoring/job"):
        assert f"shoprec/{module}.py" in names
    assert {f"shoprec/_conf/{env}.yaml" for env in ("local", "cluster", "databricks")} <= names
    assert not any(n.startswith(("tests/", "jobs/", "notebooks/")) for n in names)


@pytest.mark.e2e
def test_spark_submit_runs_ingest_to_features_from_the_wheel(
    spark: SparkSession, wheel: Path, bare_env: Path, tmp_path: Path
) -> None:
    """``spark-submit --py-files dist/<wheel> jobs/<stage>.py --env local``, unchanged jobs; the
    driver's and the workers' Python import shoprec from the wheel alone."""
    python = bare_env / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import shoprec"], capture_output=True).returncode != 0
    settings = {
        "paths": {"root": str(tmp_path / "lake")},
        "generator": {"seed": 3, "users": 80, "items": 40, "days": 4, "users_per_block": 80},
        "privacy": {"key_env": "SHOPREC_SUBMIT_KEY"},
        "features": {"split": {"valid_days": 1, "test_days": 1}},
    }
    raw = generate(spark, from_dict(settings))
    folders = Path(raw.raw_dir, "events").glob("event_date=*")
    days = sorted(p.name.removeprefix("event_date=") for p in folders)
    assert len(days) >= 3
    env = {
        **os.environ,
        "PYSPARK_PYTHON": str(python),
        "PYSPARK_DRIVER_PYTHON": str(python),
        "SHOPREC_SUBMIT_KEY": "submit-test-key",
        "PYTHONPATH": "",
    }
    sets = [a for k in ("paths.root", "privacy.key_env") for a in ("--set", f"{k}={_flat(settings)[k]}")]
    jars = ",".join(fetch_jars(from_dict(settings).spark))

    def submit(stage: str, *extra: str) -> str:
        cmd = [
            str(bare_env / "bin" / "spark-submit"),
            "--master",
            "local[2]",
            "--jars",
            jars,
            "--py-files",
            str(wheel),
            str(ROOT / "jobs" / f"{stage}.py"),
            "--env",
            "local",
            *sets,
            *extra,
        ]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{stage}: {done.stderr[-3000:]}"
        return done.stdout

    # the processing date holds back export folders of later days; the next run takes them
    first = submit("ingest", "--date", days[1])
    assert "bronze events: 2 new files" in first, first
    rest = submit("ingest")
    assert f"bronze events: {len(days) - 2} new files" in rest, rest
    submit("clean")
    out = submit("features")
    assert "gold_training_examples" in out
    cfg = from_dict(settings)
    assert delta.read(spark, cfg.table("gold_training_examples")).count() > 0
    assert delta.read(spark, cfg.table("gold_interactions")).count() > 0


def _flat(settings: dict[str, dict[str, object]]) -> dict[str, object]:
    return {f"{part}.{key}": value for part, values in settings.items() for key, value in values.items()}


@pytest.mark.e2e
def test_the_wheel_installs_into_a_clean_environment_and_the_cli_works(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(env)], check=True)
    # resolved from the package index, constrained to the tested versions (the override lifts
    # Petastorm's stale setuptools cap, as for the development environment)
    subprocess.run(
        [
            uv(),
            "pip",
            "install",
            "-q",
            "--python",
            str(env / "bin" / "python"),
            "-c",
            str(ROOT / "requirements.lock"),
            "--override",
            str(ROOT / "overrides.txt"),
            str(wheel),
        ],
        check=True,
    )
    done = subprocess.run(
        [str(env / "bin" / "shoprec"), "--help"], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    for stage in ("ingest", "clean", "features", "train", "score", "evaluate", "promote"):
        assert stage in done.stdout
    # the configuration ships inside the wheel: a wrong environment lists the packaged ones
    shoprec = str(env / "bin" / "shoprec")
    bad = subprocess.run([shoprec, "ingest", "--env", "nope"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    assert "available: cluster, databricks, local" in bad.stderr
