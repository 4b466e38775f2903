"""The main job, end to end: generate → bronze → silver → gold → evaluation → report.

Later stages (silver, gold, training, scoring, evaluation) extend this same function, so README
command 1 always runs the whole pipeline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from shoprec import console, delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.datagen.job import generate
from shoprec.errors import ShoprecError
from shoprec.etl.bronze import ingest_all
from shoprec.etl.silver import clean_all
from shoprec.evaluation.job import evaluate
from shoprec.evaluation.job import headline as job_headline
from shoprec.evaluation.report import write_report
from shoprec.features.job import build_gold
from shoprec.modeling import ltr

log = logging.getLogger(__name__)


#: The bronze, silver and quarantine tables, in the order the pipeline writes them.
DATA_TABLES: tuple[str, ...] = (
    "bronze_events",
    "bronze_catalog",
    "silver_events",
    "silver_catalog",
    "quarantine_events",
    "quarantine_catalog",
)


@dataclass(frozen=True)
class TableSummary:
    name: str
    location: str
    rows: int


@dataclass(frozen=True)
class PipelineResult:
    tables: list[TableSummary]
    report: Path | None
    headline: str  # the evaluation's main metrics as a plain-text table


def summarise(spark: SparkSession, cfg: ShoprecConfig, names: list[str]) -> list[TableSummary]:
    """Read each table back and count its rows."""
    return [TableSummary(n, cfg.table(n), delta.read(spark, cfg.table(n)).count()) for n in names]


def run_pipeline(spark: SparkSession, cfg: ShoprecConfig) -> PipelineResult:
    """Run every stage, in order: the tables it wrote with their row counts, and the report. Each
    stage puts one line on the console when it starts and one when it ends (:mod:`shoprec.console`)."""
    started = time.perf_counter()
    if cfg.generator.enabled:
        with console.stage("generate") as st:
            generated = generate(spark, cfg)
            st.summary = f"{generated.event_rows:,} events, {generated.catalog_rows:,} catalog rows"
        log.info(
            "raw exports: %d events, %d catalog rows in %s",
            generated.event_rows,
            generated.catalog_rows,
            generated.raw_dir,
        )
    with console.stage("ingest") as st:
        ingested = ingest_all(spark, cfg)
        st.summary = (
            ", ".join(f"{r.source} {r.rows:,} rows from {r.files} files" for r in ingested) + " → bronze"
        )
    with console.stage("clean") as st:
        cleaned = clean_all(spark, cfg)
        n_in, n_clean = sum(r.input_rows for r in cleaned), sum(r.silver_rows for r in cleaned)
        n_bad, n_dup = sum(r.quarantined_rows for r in cleaned), sum(r.deduplicated_rows for r in cleaned)
        st.summary = f"{n_in:,} rows in = {n_clean:,} clean + {n_bad:,} quarantined + {n_dup:,} duplicates"
    with console.stage("features") as st:
        gold = build_gold(spark, cfg)  # it counts its own tables: no second pass over them
        st.summary = f"{gold.mode}: " + ", ".join(f"{n} {r:,}" for n, r in gold.rows.items())
    tables = summarise(spark, cfg, list(DATA_TABLES))
    tables += [TableSummary(name, cfg.table(name), rows) for name, rows in gold.rows.items()]
    report, headline = None, ""
    extra, curves, trained = {}, [], None
    scored: tuple[Path, str] | None = None
    if cfg.training.enabled:
        from shoprec.evaluation.baselines import two_tower
        from shoprec.evaluation.promotion import promote_served
        from shoprec.evaluation.report import LossCurve
        from shoprec.training.job import train

        with console.stage("train") as st:
            trained = train(spark, cfg)
            st.summary = (
                f"{trained.examples:,} examples, {trained.samples_per_second:.0f} examples/s; "
                f"version {trained.registered_version} in {trained.model_dir}"
                if not trained.reused
                else f"nothing trained ({trained.reused}): version {trained.registered_version} serves on"
            )
        extra["retriever"] = two_tower(str(trained.model_dir), cfg.training.history_items)
        if trained.results:
            first = trained.results[0]
            curves.append(LossCurve("retriever", [s for s, _ in first.losses], [v for _, v in first.losses]))
        tables += summarise(spark, cfg, ["training_tokens"])
        if cfg.training.ranker.enabled:
            from shoprec.scoring.job import score

            tables += summarise(spark, cfg, ["ranker_examples"])
            # the new version serves only if its lists beat the champion's on the validation split
            # (the first version ever registered is champion already: nothing to measure)
            with console.stage("promote") as st:
                try:
                    st.summary = promote_served(spark, cfg, trained.registered_version).describe()
                except ShoprecError as exc:  # e.g. a shop too small to hold validation users out
                    log.warning("version %s not promoted: %s", trained.registered_version, exc)
                    st.summary = "not promoted"
            with console.stage("score") as st:
                done = score(spark, cfg)  # the champion: what the shop is served
                st.summary = (
                    f"{done.users:,} users, {done.candidates:,} candidates, version {done.model_version}, "
                    f"run {done.run_id}"
                )
            scored = (done.model_dir, done.model_version)
            tables += summarise(spark, cfg, ["item_embeddings"])
    if cfg.evaluation.models or extra:
        with console.stage("evaluate") as st:
            result = evaluate(spark, cfg, extra=extra, scored=scored)
            models = {str(r[S.MODEL]) for r in result.metrics if r[S.MODEL] != S.CANDIDATES_MODEL}
            st.summary = f"{len(models)} models on the {cfg.evaluation.split} split, run {result.run_id}"
        headline = job_headline(result.metrics, cfg.evaluation.ks, cfg.scoring.model_name)
        ranker = ltr.model_meta(scored[0]) if scored is not None else None
        with console.stage("report") as st:
            report = write_report(spark, cfg, result.run_id, curves=curves, ranker=ranker)
            st.summary = str(report)
        tables += summarise(spark, cfg, ["recommendations", "eval_metrics"])
        if trained is not None:
            from shoprec.evaluation.job import log_to_run

            log_to_run(cfg, trained.tracking_uri, trained.mlflow_run_id, result.metrics)
    log.info("pipeline finished in %.1fs", time.perf_counter() - started)
    return PipelineResult(tables, report, headline)
