"""The Python worker daemon that keeps Spark's archives off the workers' path."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from shoprec import spark_daemon


def _zip(path: Path, names: list[str]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(name, "")
    return str(path)


def test_only_archives_that_duplicate_installed_packages_or_hold_no_python_leave_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "site"
    (installed / "pkgdup").mkdir(parents=True)
    (installed / "pkgdup" / "__init__.py").write_text("")
    dup = _zip(tmp_path / "dup.zip", ["pkgdup/__init__.py", "pkgdup/mod.py"])
    only = _zip(tmp_path / "only.zip", ["pkgonly/__init__.py"])  # its package is nowhere else
    jar = _zip(tmp_path / "core.jar", ["org/apache/Thing.class", "META-INF/MANIFEST.MF"])
    missing = str(tmp_path / "gone.zip")  # not a file: left as it is
    path = [dup, only, jar, missing, str(installed), *sys.path]
    monkeypatch.setattr(sys, "path", list(path))
    monkeypatch.setattr(sys, "path_importer_cache", dict(sys.path_importer_cache))
    sys.path_importer_cache[dup] = None

    dropped = spark_daemon.clean_path()

    assert sorted(dropped) == sorted([dup, jar])
    assert sys.path == [p for p in path if p not in (dup, jar)]
    assert dup not in sys.path_importer_cache


@pytest.mark.spark
def test_local_python_tasks_run_without_sparks_archives_on_their_path(spark: SparkSession) -> None:
    assert spark.conf.get("spark.python.daemon.module") == "shoprec.spark_daemon"

    def probe(_: int) -> tuple[list[str], str]:
        import sys

        import pyspark

        return [p for p in sys.path if p.endswith((".zip", ".jar")) and "pyspark" in p], pyspark.__file__

    archives, origin = spark.sparkContext.parallelize(range(4), 4).map(probe).collect()[0]
    assert archives == []
    assert ".zip" not in origin  # PySpark comes from its installed package
