"""The ``shoprec`` command: one sub-command per stage, the same ``main`` behind every entry point.

``jobs/<stage>.py`` (spark-submit), a Databricks wheel task and an Airflow task all end up in
:func:`run_stage`, so a stage behaves the same wherever it is started. Problems the user can fix
(bad config, a wrong environment name, missing input) end with one line naming the fix, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from shoprec import console
from shoprec.config import ConfigError, ShoprecConfig, config_text, load_config
from shoprec.errors import ShoprecError

log = logging.getLogger("shoprec")


def _date(text: str) -> str:
    """``--date``: a calendar day, YYYY-MM-DD, checked here so the message names the flag."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise ConfigError(f"--date {text!r}: expected a day as YYYY-MM-DD, e.g. 2026-03-01") from None


def _print_tables(tables: Sequence[tuple[str, int, str]]) -> None:
    width = max((len(name) for name, _, _ in tables), default=0)
    sys.stdout.write("Delta tables:\n")
    for name, rows, location in tables:
        sys.stdout.write(f"  {name:<{width}}  {rows:>10,} rows  {location}\n")


def _generate(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.datagen.job import generate

    r = generate(spark, cfg)
    sys.stdout.write(
        f"raw exports in {r.raw_dir}: {r.event_rows} events, {r.catalog_rows} catalog rows "
        f"({r.labelled_event_rows} + {r.labelled_catalog_rows} labelled bad) in {r.seconds:.0f}s\n"
    )
    return 0


def _ingest(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.etl.bronze import ingest_all

    for r in ingest_all(spark, cfg):
        sys.stdout.write(f"bronze {r.source}: {r.files} new files, {r.rows:,} rows -> {r.location}\n")
    return 0


def _clean(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.etl.silver import clean_all

    results = clean_all(spark, cfg)
    if not results:
        sys.stdout.write("silver: no pending batches\n")
    for r in results:
        rules = ", ".join(f"{k}={v}" for k, v in r.by_rule.items()) or "none"
        sys.stdout.write(
            f"silver {r.source} batch {r.batch_id}: {r.input_rows:,} in = {r.silver_rows:,} clean + "
            f"{r.quarantined_rows:,} quarantined ({rules}) + {r.deduplicated_rows:,} de-duplicated\n"
        )
    return 0


def _features(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.features.job import build_gold

    result = build_gold(spark, cfg, full=args.full)
    sys.stdout.write(f"gold: {result.mode} ({result.new_batches} new silver batches)\n")
    _print_tables([(name, rows, cfg.table(name)) for name, rows in result.rows.items()])
    return 0


def _features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--full",
        action="store_true",
        help="rebuild every split from all of silver (default: fold in new silver batches only)",
    )


def _forget(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.etl.forget import expire_bronze, forget_user

    if bool(args.user) == bool(args.expired):
        raise ShoprecError("give exactly one of --user ID or --expired")
    result = forget_user(spark, cfg, args.user) if args.user else expire_bronze(spark, cfg)
    for table, rows in result.deleted.items():
        sys.stdout.write(f"  {table}: {rows} rows deleted\n")
    if result.vacuum_hint:
        sys.stdout.write(result.vacuum_hint + "\n")
    return 0


def _run(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.pipeline import run_pipeline

    result = run_pipeline(spark, cfg)
    # every table in a few lines: the stage lines above said what each stage wrote
    cells = [f"{t.name} {t.rows:,}" for t in result.tables]
    lake = os.path.commonpath([t.location for t in result.tables]) if result.tables else ""
    sys.stdout.write(f"\nDelta tables under {lake} (rows):\n")
    sys.stdout.write(textwrap.fill(", ".join(cells), width=100, initial_indent="  ", subsequent_indent="  "))
    sys.stdout.write("\n")
    if result.headline:
        sys.stdout.write(f"\n{result.headline}\n")
    if result.report:
        sys.stdout.write(f"\nreport: {result.report}\n")
    return 0


def _evaluate(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.evaluation.job import evaluate, headline

    scored = None
    extra = {}
    if args.scored:
        from shoprec.evaluation.baselines import two_tower
        from shoprec.serving.lists import resolve_model

        scored = resolve_model(cfg)
        # the champion's own retriever beside its lists: what the ranker adds to it
        extra["retriever"] = two_tower(str(scored[0]), cfg.training.history_items)
    result = evaluate(spark, cfg, models=args.model or None, run_id=args.run_id, extra=extra, scored=scored)
    sys.stdout.write(f"evaluation run {result.run_id} -> {cfg.table('eval_metrics')}\n")
    sys.stdout.write(headline(result.metrics, cfg.evaluation.ks, cfg.scoring.model_name) + "\n")
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", default=[], help="evaluate only this model (repeatable)")
    p.add_argument("--run-id", default=None, help="record under this run id (default: a new one)")
    p.add_argument(
        "--scored",
        action="store_true",
        help="also evaluate the champion: its retriever, and the scoring job's lists before and after each "
        "business rule",
    )


def _train(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.training.job import train

    run = train(spark, cfg, force=args.force)
    if run.reused:
        why = "data and settings unchanged"
        if run.reused == "not due":
            why = f"not due ({cfg.training.retrain})"
        sys.stdout.write(
            f"nothing trained: {why} since MLflow run {run.mlflow_run_id}; version {run.registered_version} "
            f"({run.model_dir}) serves on (--force trains anyway)\n"
        )
        return 0
    sys.stdout.write(
        f"fine-tuned retriever: {run.model_dir}\n"
        f"  {run.examples:,} examples, {run.samples_per_second:.1f} samples/s, {len(run.results)} processes\n"
        f"  MLflow run {run.mlflow_run_id} at {run.tracking_uri}\n"
    )
    if not args.no_evaluate:
        from shoprec.evaluation.job import evaluate_trained

        result = evaluate_trained(spark, cfg, run.model_dir, run.tracking_uri, run.mlflow_run_id)
        sys.stdout.write(f"  evaluation run {result.run_id} (shoprec report --run-id {result.run_id})\n")
    return 0


def _score(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.scoring.job import score

    loads = spark.sparkContext.accumulator(0)
    r = score(spark, cfg, incremental=args.incremental, loads=loads)
    lists = ", ".join(f"{name}: {n:,} users" for name, n in r.lists.items()) or "none (nothing changed)"
    sys.stdout.write(
        f"scored with model {r.model_version} (run {r.run_id}): {r.users:,} users, "
        f"{r.candidates:,} candidates, {r.pairs_per_second:,.0f} pairs/s, ranker loaded {r.ranker_loads}x\n"
        f"  lists: {lists}\n  item embeddings refreshed: {r.embedded_items:,}\n  -> {r.location}\n"
    )
    return 0


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--incremental",
        action="store_true",
        help="re-embed only changed items (Change Data Feed) and re-score only the users they affect",
    )


def _stream(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.streaming.job import run

    done = run(spark, cfg)
    users = sum(b.users for b in done.batches)
    rows = sum(b.input_rows for b in done.batches)
    lags = sorted(lag for b in done.batches for lag in b.lags)
    fresh = f", newest event to new list p50 {lags[len(lags) // 2]:.1f}s" if lags else ""
    sys.stdout.write(
        f"stream ({cfg.stream.source}, {cfg.stream.trigger}): {len(done.batches)} micro-batches, "
        f"{rows:,} events, {users:,} users re-scored{fresh}\n  checkpoint: {done.checkpoint}\n"
    )
    return 0


def _stream_config(cfg: ShoprecConfig) -> ShoprecConfig:
    """Spark's Kafka source on the session when the stream reads Kafka."""
    if cfg.stream.source != "kafka":
        return cfg
    from shoprec.spark import kafka_package

    package = cfg.stream.kafka.package or kafka_package()
    if package in cfg.spark.packages:
        return cfg
    spark = dataclasses.replace(cfg.spark, packages=(*cfg.spark.packages, package))
    return dataclasses.replace(cfg, spark=spark)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-evaluate", action="store_true", help="skip evaluating the fine-tuned model")
    p.add_argument(
        "--force",
        action="store_true",
        help="train even when the data and settings are those of a finished training (training.retrain)",
    )


def _promote(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.evaluation.promotion import promote_served

    result = promote_served(spark, cfg, version=args.version, force=args.force)
    sys.stdout.write(result.describe() + "\n")
    return 0


def _promote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", default=None, help="the registered version to promote (default: the newest)")
    p.add_argument(
        "--force", action="store_true", help="make it champion even if its evaluation is not better"
    )


def _report(spark: SparkSession, cfg: ShoprecConfig, args: argparse.Namespace) -> int:
    from shoprec.evaluation.report import write_report
    from shoprec.modeling import ltr
    from shoprec.serving.lists import resolve_model

    try:  # the champion's learning-to-rank model, when there is one to describe
        ranker = ltr.model_meta(resolve_model(cfg)[0])
    except ShoprecError:
        ranker = None
    path = write_report(spark, cfg, run_id=args.run_id, out=args.out, ranker=ranker)
    sys.stdout.write(f"report: {path}\n")
    if args.screenshot:
        from shoprec.evaluation.report import screenshot

        sys.stdout.write(f"screenshot: {screenshot(path, Path(args.screenshot))}\n")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-id", default=None, help="the evaluation run to show (default: the latest)")
    p.add_argument("--out", default=None, help="HTML file to write (default: paths.reports)")
    p.add_argument(
        "--screenshot", default=None, metavar="PNG", help="also save the page's first screen (needs chromium)"
    )


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply the configured users and items (same as --set generator.scale=N)",
    )


def _forget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", default=None, metavar="ID", help="the user's raw id, as the shop exports it")
    p.add_argument(
        "--expired", action="store_true", help="delete raw rows past privacy.bronze_retention_days"
    )


@dataclass(frozen=True)
class Stage:
    run: Callable[[Any, ShoprecConfig, argparse.Namespace], int]
    help: str
    example: str
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    spark: bool = True  # whether the stage needs a SparkSession


STAGES: dict[str, Stage] = {
    "run": Stage(
        _run,
        "run the whole pipeline on the configured data and print the tables it wrote",
        "shoprec run --env local --set generator.users=500",
    ),
    "generate": Stage(
        _generate,
        "write a synthetic shop's raw exports (events, catalog, defect labels)",
        "shoprec generate --scale 10 --set generator.format=parquet",
        _generate_args,
    ),
    "ingest": Stage(
        _ingest,
        "load new raw export files into the bronze tables (files already loaded are skipped)",
        "shoprec ingest --env cluster --set paths.raw=s3a://shop-exports/daily",
    ),
    "clean": Stage(
        _clean,
        "clean pending bronze batches into silver; rejected rows go to quarantine with a reason",
        "shoprec clean --env local --set cleaning.bot_events_per_day=500",
    ),
    "features": Stage(
        _features,
        "build the gold tables (interactions, item features, profiles, sequences, training examples)",
        "shoprec features --env local --full --set features.split.mode=leave_last_out",
        _features_args,
    ),
    "evaluate": Stage(
        _evaluate,
        "recommend with every baseline, score them on the held-out split and record the metrics",
        "shoprec evaluate --env office --model als --model encoder",
        _evaluate_args,
    ),
    "train": Stage(
        _train,
        "fine-tune the two-tower retriever and the ranker (Petastorm -> Horovod), track in MLflow, evaluate",
        "shoprec train --env local --set training.processes=2 --set training.epochs=1",
        _train_args,
    ),
    "score": Stage(
        _score,
        "rank candidates for every user with the fine-tuned model, apply business rules, MERGE into Delta",
        "shoprec score --env local --set scoring.retrieval_k=200",
        _score_args,
    ),
    "stream": Stage(
        _stream,
        "fold new events (files or a Kafka topic) into silver and gold and re-score their users, "
        "micro-batch by micro-batch, until stopped (or caught up with stream.trigger=availableNow)",
        "shoprec stream --env local --set stream.trigger=availableNow",
    ),
    "promote": Stage(
        _promote,
        "make a registered model version @champion (what scoring loads) if the lists it would serve "
        "beat the champion's on the validation split",
        "shoprec promote --env local --version 3",
        _promote_args,
    ),
    "report": Stage(
        _report,
        "write the HTML evaluation report (plots and tables) of the latest or a given run",
        "shoprec report --env local --out /tmp/report.html",
        _report_args,
    ),
    "forget": Stage(
        _forget,
        "delete one user's rows from every table (or raw rows past retention)",
        "shoprec forget --env local --user cust-00000042",
        _forget_args,
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoprec",
        description="Shop behaviour logs and catalog in, per-user recommendations out.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, stage in STAGES.items():
        p = sub.add_parser(name, help=stage.help, description=stage.help, epilog=f"example: {stage.example}")
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
        p.add_argument(
            "--date",
            default=None,
            metavar="YYYY-MM-DD",
            help="the day being processed, e.g. a scheduler's data interval (same as --set processing_date=)",
        )
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        if stage.arguments:
            stage.arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shoprec`` console script."""
    args = _parser().parse_args(argv)
    console.configure(args.verbose)
    stage = STAGES[args.stage]
    overrides = list(args.overrides)
    if getattr(args, "scale", None) is not None:
        overrides.append(f"generator.scale={args.scale}")
    if args.verbose:
        overrides.append("spark.log_level=WARN")
    try:
        if args.date is not None:
            overrides.append(f"processing_date={_date(args.date)}")
        cfg = load_config(args.env, overrides, args.conf_dir)
    except ConfigError as exc:
        sys.stderr.write(f"shoprec {args.stage}: configuration error: {exc}\n")
        return 2
    if args.stage == "stream":
        cfg = _stream_config(cfg)
    log_file, config_file = console.log_to_file(Path(cfg.path("logs")), args.stage, config_text(cfg))
    log.info("shoprec %s (env %s): configuration in %s", args.stage, cfg.env, config_file)
    sys.stderr.write(f"shoprec {args.stage} (env {cfg.env}): log {log_file}, configuration {config_file}\n")
    spark = None
    if stage.spark:
        from shoprec.spark import get_spark

        spark = get_spark(cfg.spark)
    try:
        if args.stage == "run":  # the pipeline prints a line per stage itself
            return stage.run(spark, cfg, args)
        with console.stage(args.stage):
            return stage.run(spark, cfg, args)
    except ShoprecError as exc:
        sys.stderr.write(f"shoprec {args.stage}: {exc}\n")
        return 2
    except Exception as exc:
        missing = missing_table(cfg, exc)
        if missing is None:
            raise
        sys.stderr.write(f"shoprec {args.stage}: {missing}\n")
        return 2


#: Which stage writes the tables whose names start so (for "run X first").
_WRITER = {
    "bronze": "ingest",
    "ingest": "ingest",
    "silver": "clean",
    "quarantine": "clean",
    "gold": "features",
    "training": "train",
    "ranker": "train",
    "item_embeddings": "score",
    "score": "score",
    "recommendations": "evaluate",
    "eval": "evaluate",
}
#: Spark's and Delta's "no table here": by path (``is not a Delta table``, ``Path does not exist``)
#: and Delta's error class for a location that holds no table (``DELTA_TABLE_NOT_FOUND``).
_MISSING = re.compile(
    r"`?([^`\s]+)`? is not a Delta table|Path does not exist: (\S+)|Delta table `([^`]+)` doesn't exist"
)


def missing_table(cfg: ShoprecConfig, exc: BaseException) -> str | None:
    """One line naming the missing table and the stage that writes it, when ``exc`` is Spark's or
    Delta's "no table here" error; ``None`` for anything else."""
    m = _MISSING.search(str(exc))
    if not m:
        return None
    where = next(g for g in m.groups() if g).rstrip(".")
    bare = where.removeprefix("file:")
    name = next(
        (n for n, loc in cfg.tables.items() if bare.rstrip("/").endswith(cfg.table(n).rstrip("/"))), None
    )
    if name is None:
        return f"no Delta table at {where}: check paths.root and --env ({cfg.env}), or run its stage first"
    writer = next((w for prefix, w in _WRITER.items() if name.startswith(prefix)), None)
    fix = f"run `shoprec {writer} --env {cfg.env}` first" if writer else "run the stage that writes it first"
    return f"table {name} does not exist yet ({cfg.table(name)}): {fix}, or check paths.root and --env"


def notebook_stage(stage: str, env: str, overrides: str = "", processing_date: str = "") -> None:
    """What a Databricks notebook calls with its widgets: the stage as ``shoprec STAGE`` runs it.

    ``overrides`` is ``KEY=VALUE`` pairs separated by ``;``. A failed stage raises, so the notebook
    (and the job task running it) fails with the stage's one-line message.
    """
    argv = ["--env", env]
    for item in overrides.split(";"):
        if item.strip():
            argv += ["--set", item.strip()]
    if processing_date.strip():
        argv += ["--date", processing_date.strip()]
    code = main([stage, *argv])
    if code != 0:
        raise ShoprecError(f"shoprec {stage} failed (exit {code}); its message is above")


def run_stage(stage: str, argv: Sequence[str] | None = None) -> int:
    """What ``jobs/<stage>.py`` calls: the stage's command line, as if typed after ``shoprec STAGE``."""
    return main([stage, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
