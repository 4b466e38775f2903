"""PySpark's worker daemon, started without the archives that make every Python task slow.

Spark puts ``pyspark.zip``, the py4j zip and the ``spark-core`` jar at the head of every Python
worker's path, and the worker calls ``importlib.invalidate_caches()`` at the start of each task.
On Python 3.11 that makes every zip importer on the path re-read its archive's whole directory,
and the next imports read it again: about 140 ms a task on this project's 2-core machine (a task
that does nothing took 190 ms). Where PySpark is installed as a package (``pip install pyspark``,
this project's environment), those archives hold copies of what is installed already, so this
module drops them from the path, then runs PySpark's own daemon. Where an archive is the only
source of a package (a Spark distribution without a pip install), it stays.

Used with ``spark.python.daemon.module=shoprec.spark_daemon`` (:func:`shoprec.spark.get_spark`
sets it for local sessions).
"""

from __future__ import annotations

import importlib.machinery
import runpy
import sys
import zipfile
from pathlib import Path


def _top_level(archive: str) -> set[str] | None:
    """The Python packages and modules at the top of ``archive`` (empty: no Python in it);
    None when it cannot be read as a zip."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.endswith(".py")]
    except (OSError, zipfile.BadZipFile):
        return None
    return {n.split("/", 1)[0].removesuffix(".py") for n in names}


def clean_path() -> list[str]:
    """Drop from ``sys.path`` the archives that hold no Python, or only packages importable from
    a directory on the path as well; the entries dropped. Nothing else changes."""
    archives = [p for p in sys.path if p.endswith((".zip", ".jar", ".egg")) and Path(p).is_file()]
    directories = [p for p in sys.path if p not in archives]
    dropped = []
    for archive in archives:
        top = _top_level(archive)
        if top is not None and all(
            importlib.machinery.PathFinder.find_spec(name, directories) is not None for name in top
        ):
            dropped.append(archive)
    sys.path[:] = [p for p in sys.path if p not in dropped]
    for entry in dropped:
        sys.path_importer_cache.pop(entry, None)
    return dropped


if __name__ == "__main__":
    clean_path()
    runpy.run_module("pyspark.daemon", run_name="__main__", alter_sys=True)
