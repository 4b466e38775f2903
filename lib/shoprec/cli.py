"""The ``shoprec`` command: one sub-command per stage, the same ``main`` behind every entry point.

``jobs/<stage>.py`` (spark-submit), a Databricks wheel task and an Airflow task all end up in
:func:`run_stage`, so a stage behaves the same wherever it is started. Problems the user can fix
(bad config, a wrong environment name, missing input) end with one line naming the fix, exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pyspark.sql import SparkSession

from shoprec.config import ConfigError, ShoprecConfig, load_config, log_config
from shoprec.errors import ShoprecError

log = logging.getLogger("shoprec")


def _generate(spark: SparkSession, cfg: ShoprecConfig) -> int:
    from shoprec.datagen.job import generate

    r = generate(spark, cfg)
    sys.stdout.write(
        f"raw exports in {r.raw_dir}: {r.event_rows} events, {r.catalog_rows} catalog rows "
        f"({r.labelled_event_rows} + {r.labelled_catalog_rows} labelled bad) in {r.seconds:.0f}s\n"
    )
    return 0


def _run(spark: SparkSession, cfg: ShoprecConfig) -> int:
    from shoprec.pipeline import run_pipeline

    tables = run_pipeline(spark, cfg)
    width = max(len(t.name) for t in tables)
    sys.stdout.write("Delta tables:\n")
    for t in tables:
        sys.stdout.write(f"  {t.name:<{width}}  {t.rows:>10,} rows  {t.location}\n")
    return 0


STAGES: dict[str, tuple[Callable[[SparkSession, ShoprecConfig], int], str, str]] = {
    "run": (
        _run,
        "run the whole pipeline on the configured data and print the tables it wrote",
        "shoprec run --env local --set generator.users=500",
    ),
    "generate": (
        _generate,
        "write a synthetic shop's raw exports (events, catalog, defect labels)",
        "shoprec generate --scale 10 --set generator.format=parquet",
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoprec",
        description="Shop behaviour logs and catalog in, per-user recommendations out.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, (_, help_text, example) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example: {example}")
        p.add_argument(
            "--env", default="local", help="configuration environment: conf/<env>.yaml (default local)"
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a configuration value, e.g. --set generator.users=500 (repeatable)",
        )
        p.add_argument("--conf-dir", default=None, help="directory of the YAML files (default: conf/)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        if name == "generate":
            p.add_argument(
                "--scale",
                type=float,
                default=None,
                help="multiply the configured users and items (same as --set generator.scale=N)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shoprec`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    fn = STAGES[args.stage][0]
    overrides = list(args.overrides)
    if getattr(args, "scale", None) is not None:
        overrides.append(f"generator.scale={args.scale}")
    try:
        cfg = load_config(args.env, overrides, args.conf_dir)
    except ConfigError as exc:
        sys.stderr.write(f"shoprec {args.stage}: configuration error: {exc}\n")
        return 2
    log_config(cfg)
    from shoprec.spark import get_spark

    spark = get_spark(cfg.spark)
    try:
        return fn(spark, cfg)
    except ShoprecError as exc:
        sys.stderr.write(f"shoprec {args.stage}: {exc}\n")
        return 2


def run_stage(stage: str, argv: Sequence[str] | None = None) -> int:
    """What ``jobs/<stage>.py`` calls: the stage's command line, as if typed after ``shoprec STAGE``."""
    return main([stage, *(sys.argv[1:] if argv is None else argv)])
