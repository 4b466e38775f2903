"""``shoprec train``: tokens table → fine-tuning processes → model directory → rankers → MLflow.

One MLflow run per training (local file store by default): parameters, per-step loss from rank 0,
throughput, the evaluation module's validation/test metrics for the fine-tuned retriever, and the
model directory with its tokenizer as an artifact (``model/``) that scoring loads.

Checkpoints live under ``paths.checkpoints/<fingerprint>``, the fingerprint being a hash of the
training settings and the tokens table's version: re-running the same training after a crash
finds them and resumes; changing anything starts afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from shoprec import delta, registry
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.modeling import ranker as rk
from shoprec.training import distributed as dist
from shoprec.training import reuse
from shoprec.training.data import snapshot_files
from shoprec.training.prepare import model_path, prepare
from shoprec.training.train import TrainResult, TrainSpec, train_worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRun:
    model_dir: Path
    mlflow_run_id: str
    tracking_uri: str
    results: list[TrainResult]
    seconds: float  # the whole run: preparing the tokens, fine-tuning, the rankers, registering
    examples: int
    ranker_dir: Path | None = None
    ranker_results: list[Any] = dataclasses.field(default_factory=list)
    registered_version: str | None = None  # in the model registry (training.registered_model)
    train_seconds: float = 0.0  # fine-tuning alone: the training processes, start to finish
    #: Set when nothing was trained: ``"unchanged"`` (same data and settings as this finished
    #: run) or ``"not due"`` (``training.retrain``'s schedule); the run's model is served again.
    reused: str | None = None

    @property
    def samples_per_second(self) -> float:
        """All processes together, over the fine-tuning time alone (as MLflow's ``samples_per_second``):
        over the whole run, token preparation and the rankers would read as slow training."""
        return self.examples / self.train_seconds if self.train_seconds else 0.0


def _experiment(client: Any, cfg: ShoprecConfig) -> str:
    """The experiment's id; created with its artifacts under ``paths.root`` (not the working dir)."""
    found = client.get_experiment_by_name(cfg.training.experiment)
    if found:
        return str(found.experiment_id)
    artifacts = Path(cfg.path("root"), "mlartifacts").resolve().as_uri()
    return str(client.create_experiment(cfg.training.experiment, artifact_location=artifacts))


def _fingerprint(cfg: ShoprecConfig, tokens_version: int) -> str:
    retriever = {k: v for k, v in dataclasses.asdict(cfg.training).items() if k != "ranker"}
    text = json.dumps([retriever, tokens_version, model_path(cfg)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train(spark: SparkSession, cfg: ShoprecConfig, force: bool = False) -> TrainRun:
    """Prepare the tokens, fine-tune on ``training.processes`` processes, fit the rankers, record
    and register (the caller evaluates: training sits below evaluation). Unless ``force``, a
    finished training of the same data and settings (or, by ``training.retrain``, the newest one
    while training is not due) is re-used instead (:mod:`shoprec.training.reuse`)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    t = cfg.training
    started = time.perf_counter()
    uri = registry.tracking_uri(cfg)
    client = MlflowClient(uri)
    experiment_id = _experiment(client, cfg)
    data_fingerprint = reuse.data_fingerprint(spark, cfg)
    found = None if force else reuse.find(client, experiment_id, cfg, data_fingerprint)
    if found is not None:
        log.info(
            "training %s since MLflow run %s: version %s (%s) serves on, nothing trained",
            "data and settings unchanged" if found.why == "unchanged" else f"not due ({t.retrain})",
            found.run_id,
            found.version,
            found.model_dir,
        )
        kept_ranker = found.model_dir / rk.RANKER_DIR
        return TrainRun(
            found.model_dir,
            found.run_id,
            uri,
            [],
            time.perf_counter() - started,
            0,
            kept_ranker if kept_ranker.is_dir() else None,
            registered_version=found.version,
            reused=found.why,
        )
    prepared = prepare(spark, cfg)
    version_row = delta.for_location(spark, prepared.location).history(1).select("version").first()
    version = int(version_row[0]) if version_row else 0
    fingerprint = _fingerprint(cfg, version)
    files = snapshot_files(spark, prepared.location, {S.SPLIT: S.TRAIN})
    previous = client.search_runs(
        [experiment_id],
        f"tags.fingerprint = '{fingerprint}' and attributes.status != 'FINISHED'",
        max_results=1,
    )
    if previous:
        run_id = previous[0].info.run_id
        log.info("resuming MLflow run %s (same settings and data as an unfinished run)", run_id)
    else:
        created = client.create_run(experiment_id, tags={"fingerprint": fingerprint, "model": "retriever"})
        run_id = created.info.run_id
        params = {k: v for k, v in dataclasses.asdict(t).items() if k not in ("lora", "ranker")}
        params.update({f"lora_{k}": v for k, v in dataclasses.asdict(t.lora).items()})
        params.update(
            {"base_model": model_path(cfg), "train_examples": prepared.rows, "tokens_version": version}
        )
        for key, value in params.items():
            client.log_param(run_id, key, str(value)[:500])
    output = Path(cfg.path("models")) / f"retriever-{fingerprint}"
    spec = TrainSpec(
        files=files,
        rows=prepared.rows,
        base_model=model_path(cfg),
        output=str(output),
        checkpoints=str(Path(cfg.path("checkpoints")) / fingerprint),
        cfg=t,
        tracking_uri=uri,
        mlflow_run_id=run_id,
    )
    processes = 1 if t.launcher == "single" else t.processes
    train_started = time.perf_counter()
    results = dist.launch(train_worker, processes, t.launcher, args=(spec,))
    seconds = time.perf_counter() - train_started
    examples = sum(r.examples for r in results)
    client.log_metric(run_id, "samples_per_second", examples / seconds if seconds else 0.0)
    client.log_metric(run_id, "train_seconds", seconds)
    if t.sequence.enabled:
        from shoprec.training.sequence_job import train_sequence

        fitted = train_sequence(spark, cfg, output)
        if fitted is not None:
            client.log_metric(run_id, "sequence_valid_ndcg_at_10", fitted["valid_ndcg_at_10"])
            client.log_metric(run_id, "sequence_seconds", fitted["seconds_total"])
    ranker_dir: Path | None = None
    ranker_results: list[Any] = []
    if t.ranker.enabled:
        from shoprec.training.ranker_job import train_ranker

        ranker_dir, ranker_results = train_ranker(spark, cfg, output, client, run_id)
        if t.ranker.kind != "torch":
            from shoprec.training.ltr_job import train_ltr

            ranked = train_ltr(spark, cfg, output, ranker_dir)
            if ranked is not None:
                client.log_metric(run_id, "ltr_valid_ndcg_at_10", ranked.lightgbm_ndcg)
                if ranked.torch_ndcg is not None:
                    client.log_metric(run_id, "torch_head_valid_ndcg_at_10", ranked.torch_ndcg)
                client.set_tag(run_id, "ranker", ranked.chosen)
                client.log_metric(run_id, "ltr_seconds", ranked.seconds)
    client.log_artifacts(run_id, str(output), "model")  # the retriever, its tokenizer and the ranker
    registered = registry.register(cfg, run_id, "model")
    # what a later run compares itself with (reuse.find reads finished runs only)
    client.set_tag(run_id, reuse.DATA_TAG, data_fingerprint)
    client.set_tag(run_id, reuse.MODEL_DIR_TAG, str(output.resolve()))
    client.set_tag(run_id, reuse.DATE_TAG, reuse.processing_day(cfg).isoformat())
    client.set_terminated(run_id, "FINISHED")
    mlflow.set_tracking_uri(uri)
    run = TrainRun(
        output,
        run_id,
        uri,
        results,
        time.perf_counter() - started,
        examples,
        ranker_dir,
        ranker_results,
        str(registered.version),
        train_seconds=seconds,
    )
    log.info(
        "training run %s: %d examples in %.0fs (%.1f samples/s over %d processes) -> %s",
        run_id,
        examples,
        seconds,
        examples / seconds if seconds else 0.0,
        processes,
        output,
    )
    return run
