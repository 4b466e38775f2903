"""The one SparkSession factory. Only jobs, notebooks, the CLI and tests call it.

On Databricks, or under ``spark-submit`` on a cluster that already started a session, it returns the
active session untouched. Locally it builds one with Delta Lake's SQL extensions and catalog, and
resolves Delta's jars from Maven Central once into an Ivy cache outside the checkout.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from pyspark.sql import SparkSession

from shoprec.config import SparkConfig

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
LOG4J = Path(__file__).with_name("log4j2.properties")


def _progress_bar(cfg: SparkConfig) -> bool:
    """Spark's console progress bar: on a terminal only, unless configured."""
    if cfg.progress_bar == "auto":
        return sys.stderr.isatty()
    return cfg.progress_bar == "on"


def delta_package(cfg: SparkConfig) -> str:
    """Maven coordinates of Delta's jars; by default those matching the installed ``delta-spark``."""
    return cfg.delta_package or f"io.delta:delta-spark_2.13:{version('delta-spark')}"


def packages(cfg: SparkConfig) -> list[str]:
    """Every Maven package the session loads: Delta's, then ``spark.packages`` (Kafka's source)."""
    return [delta_package(cfg), *cfg.packages]


def kafka_package() -> str:
    """Spark's Kafka source for the installed pyspark's feature line (Scala 2.13, as Spark 4 is):
    its ``.0`` build. Spark keeps binary compatibility within a line, and the ``.0`` build is the
    one every mirror holds (the registry this project is built against lacks 4.0.1's token
    provider). ``stream.kafka.package`` names another."""
    from pyspark import __version__

    major, minor = __version__.split(".")[:2]
    return f"org.apache.spark:spark-sql-kafka-0-10_2.13:{major}.{minor}.0"


def _manifest(cfg: SparkConfig) -> Path:
    name = "+".join(p.replace(":", "_") for p in packages(cfg))
    return Path(os.path.expanduser(cfg.jars_cache)) / f"{name}.jars"


def _cached_jars(cfg: SparkConfig) -> list[str]:
    """Jar files recorded by an earlier resolution of Delta's package, if all are still there."""
    manifest = _manifest(cfg)
    if not manifest.is_file():
        return []
    jars = [line for line in manifest.read_text().splitlines() if line.strip()]
    return jars if jars and all(Path(j).is_file() for j in jars) else []


def fetch_jars(cfg: SparkConfig) -> list[str]:
    """Resolve Delta's jars (and ``spark.packages``) from Maven Central into the Ivy cache and
    record their files."""
    manifest = _manifest(cfg)
    if _cached_jars(cfg):
        return _cached_jars(cfg)
    manifest.unlink(missing_ok=True)
    spark = get_spark(cfg)
    jars = [j.removeprefix("file://") for j in (spark.conf.get("spark.jars", "") or "").split(",") if j]
    spark.range(1).count()  # the jars load: Delta's classes are on the classpath
    spark.stop()
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("\n".join(jars) + "\n")
    log.info("Delta jars cached: %s", ", ".join(jars))
    return jars


def ship_wheel(spark: SparkSession) -> Path | None:
    """Make a ``--py-files`` wheel importable in Spark's Python workers too.

    ``spark-submit --py-files dist/shoprec-*.whl`` puts the wheel on the driver's path, but PySpark
    adds only ``.zip``, ``.egg`` and ``.jar`` files to the workers' path. A wheel is a zip archive:
    ship a copy named ``.zip`` and the workers import shoprec from it as the driver does.
    """
    import shoprec

    archive = next((p for p in Path(shoprec.__file__).parents if p.suffix == ".whl" and p.is_file()), None)
    if archive is None:
        return None
    copy = Path(tempfile.mkdtemp(prefix="shoprec-py-")) / f"{archive.stem}.zip"
    shutil.copyfile(archive, copy)
    spark.sparkContext.addPyFile(str(copy))
    log.info("shipping %s to the Python workers as %s", archive.name, copy.name)
    return copy


def _installed_here() -> bool:
    """Whether this interpreter imports shoprec from a directory (an install, not a shipped
    archive), so that local Python workers, which run the same interpreter, can start its daemon."""
    import shoprec

    return Path(shoprec.__file__).parent.is_dir() and os.environ.get("PYSPARK_PYTHON") == sys.executable


def get_spark(cfg: SparkConfig | None = None) -> SparkSession:
    """Return the active session if there is one, else build a local one from ``cfg``."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    cfg = cfg or SparkConfig()
    # Spark's Python workers must run this interpreter (our virtual environment), not the system one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")  # pandas-on-Spark asks for it with pyarrow >= 2
    local = (cfg.master or "").startswith("local")
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # one machine: no need for a routable address
    builder = SparkSession.builder.appName(cfg.app_name)
    if cfg.master:
        builder = builder.master(cfg.master)
    settings: dict[str, str] = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.default.parallelism": str(cfg.shuffle_partitions),
        "spark.driver.memory": cfg.driver_memory,
        "spark.ui.enabled": str(cfg.ui_enabled).lower(),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Delta's defaults for a single machine: no need to wait on retention checks in tests.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.ui.showConsoleProgress": str(_progress_bar(cfg)).lower(),
    }
    if local:  # the JVM starts here: its first lines follow shoprec's levels, not Spark's defaults
        settings["spark.driver.extraJavaOptions"] = f"-Dlog4j.configurationFile={LOG4J}"
    if cfg.resolve_delta_jars:
        jars = _cached_jars(cfg)
        if jars:  # resolved before: use the files, touch no repository
            settings["spark.jars"] = ",".join(jars)
        else:
            settings["spark.jars.packages"] = ",".join(packages(cfg))
            settings["spark.jars.ivy"] = os.path.expanduser(cfg.jars_cache)
    if local and _installed_here():
        # Python tasks without re-reading Spark's zips each time (~140 ms a task): shoprec.spark_daemon
        settings["spark.python.daemon.module"] = "shoprec.spark_daemon"
    settings.update(cfg.conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    started = time.perf_counter()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    ship_wheel(spark)
    log.info(
        "Spark %s session %s started in %.1fs (master=%s)",
        spark.version,
        cfg.app_name,
        time.perf_counter() - started,
        spark.sparkContext.master,
    )
    return spark


def main(argv: list[str] | None = None) -> int:
    """``python -m shoprec.spark --fetch-jars``: resolve Delta's jars into the cache (used by setup)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--fetch-jars", action="store_true", help="resolve Delta's jars, then stop")
    parser.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="GROUP:ARTIFACT:VERSION",
        help="with --fetch-jars: resolve this package beside Delta's as one set (repeatable)",
    )
    parser.add_argument(
        "--kafka", action="store_true", help="with --fetch-jars: Spark's Kafka source for this pyspark"
    )
    parser.add_argument(
        "--print-jars",
        action="store_true",
        help="print the cached Delta jars comma-separated, for `spark-submit --jars` on one machine",
    )
    args = parser.parse_args(argv)
    if args.print_jars:
        sys.stdout.write(",".join(fetch_jars(SparkConfig(master="local[1]"))) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.fetch_jars:
        extra = list(args.package)
        if args.kafka:
            extra.append(kafka_package())
        fetch_jars(SparkConfig(master="local[1]", app_name="shoprec-fetch-jars", packages=tuple(extra)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
