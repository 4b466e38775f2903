"""Training the ranking head after the retriever: examples in Spark → Delta → Petastorm → Horovod.

1. :func:`prepare_examples` writes ``ranker_examples``: for the same sampled gold examples the
   retriever trained on, the positive (click = 1, purchase = 1 when the event was a purchase) and
   up to ``ranker.negatives`` of its sampled negatives (0, 0) and ``ranker.hard_negatives`` drawn
   from the retriever's own top items for the example (:func:`hard_pairs`), each with the
   fine-tuned retriever's user vector (of the example's own history text) and item vector, and
   the pair features.
2. :func:`ranker_worker` runs in every training process (the retriever's launcher and process
   count): sharded Petastorm reads, a Horovod ``DistributedOptimizer``, mean loss per epoch over
   all ranks; rank 0 then scores the validation split and saves the ranker (and its distilled
   student) beside the retriever.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType
from pyspark.sql.window import Window

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import RankerConfig, ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.training import distributed as dist
from shoprec.training import ranker as rk
from shoprec.training.data import make_loader, make_reader, snapshot_files
from shoprec.training.prepare import USER_TEXT, sample, texts

log = logging.getLogger(__name__)

RANKER_EXAMPLES_SCHEMA = StructType(
    [
        StructField(S.SPLIT, StringType(), False),
        StructField(S.USER_KEY, StringType(), False),
        StructField(S.ITEM_ID, StringType(), False),
        StructField(rk.USER_VECTOR, ArrayType(FloatType(), False), False),
        StructField(rk.ITEM_VECTOR, ArrayType(FloatType(), False), False),
        StructField(rk.FEATURES, ArrayType(FloatType(), False), False),
        StructField(rk.CLICK, FloatType(), False),
        StructField(rk.PURCHASE, FloatType(), False),
        StructField(rk.VALUE, FloatType(), False),
    ]
)
SOURCE = "shoprec.ranker.source"
ROW = "_row"


@dataclass(frozen=True)
class RankerExamples:
    location: str
    train_rows: int
    valid_rows: int
    dim: int


def _source(spark: SparkSession, cfg: ShoprecConfig, retriever_dir: Path) -> str:
    versions = [
        delta.for_location(spark, cfg.table(n)).history(1).select("version").first()
        for n in ("gold_training_examples", "gold_item_features", "gold_user_profiles")
    ]
    t = cfg.training
    r = t.ranker
    shape: list[Any] = [str(retriever_dir), t.max_examples, t.history_items, r.negatives]
    shape += [r.hard_negatives, r.hard_pool, list(rk.FEATURE_NAMES)]
    text = json.dumps([[v[0] if v else None for v in versions], shape])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pairs(examples: DataFrame, negatives: int) -> DataFrame:
    """One row per (example, candidate): the positive with its labels, then ``negatives`` negatives."""
    base = [ROW, S.SPLIT, S.USER_KEY]
    positive = examples.select(
        *base,
        F.col(S.POSITIVE_ITEM).alias(S.ITEM_ID),
        F.lit(1.0).cast("float").alias(rk.CLICK),
        F.when(F.col(S.EVENT_TYPE) == "purchase", 1.0).otherwise(0.0).cast("float").alias(rk.PURCHASE),
    )
    negative = examples.select(
        *base, F.explode(F.slice(S.NEGATIVE_ITEMS, 1, negatives)).alias(S.ITEM_ID)
    ).select(
        *base,
        S.ITEM_ID,
        F.lit(0.0).cast("float").alias(rk.CLICK),
        F.lit(0.0).cast("float").alias(rk.PURCHASE),
    )
    return positive.unionByName(negative)


def hard_pairs(
    spark: SparkSession,
    examples: DataFrame,
    users: DataFrame,
    item_vectors: DataFrame,
    cfg: RankerConfig,
    seed: int,
) -> DataFrame:
    """Negatives like the ones scoring puts before the head: ``cfg.hard_negatives`` items drawn
    (by a seeded hash, so reproducibly) from the retriever's top ``cfg.hard_pool`` for each
    example's user vector, the example's positive excluded. Same columns as :func:`pairs`."""
    from shoprec.evaluation.retrieval import VECTOR, ItemMatrix, top_k

    matrix = ItemMatrix.from_frame(item_vectors.select(S.ITEM_ID, F.col(rk.ITEM_VECTOR).alias(VECTOR)))
    queries = users.select(F.col(ROW).alias(S.USER_KEY), F.col(rk.USER_VECTOR).alias(VECTOR))
    positives = examples.select(F.col(ROW).alias(S.USER_KEY), F.col(S.POSITIVE_ITEM).alias(S.ITEM_ID))
    top = top_k(spark, queries, matrix, cfg.hard_pool, positives)
    draw = Window.partitionBy(S.USER_KEY).orderBy(F.xxhash64(S.USER_KEY, S.ITEM_ID, F.lit(seed)))
    drawn = top.withColumn("_n", F.row_number().over(draw)).where(F.col("_n") <= cfg.hard_negatives)
    return (
        drawn.select(F.col(S.USER_KEY).alias(ROW), S.ITEM_ID)
        .join(examples.select(ROW, S.SPLIT, S.USER_KEY), ROW)
        .select(
            ROW,
            S.SPLIT,
            S.USER_KEY,
            S.ITEM_ID,
            F.lit(0.0).cast("float").alias(rk.CLICK),
            F.lit(0.0).cast("float").alias(rk.PURCHASE),
        )
    )


def prepare_examples(spark: SparkSession, cfg: ShoprecConfig, retriever_dir: Path) -> RankerExamples:
    """Write ``ranker_examples`` (train and valid) from the gold examples and the retriever at
    ``retriever_dir``; skipped when the table was made from the same inputs."""
    from shoprec.evaluation import encoder

    t = cfg.training
    location = cfg.table("ranker_examples")
    source = _source(spark, cfg, retriever_dir)
    delta.ensure_table(spark, location, RANKER_EXAMPLES_SCHEMA, [S.SPLIT])
    detail = delta.for_location(spark, location).detail().select("properties").first()
    if not (detail and (detail[0] or {}).get(SOURCE) == source):
        examples = delta.read(spark, cfg.table("gold_training_examples")).where(
            F.col(S.SPLIT).isin(S.TRAIN, S.VALID)
        )
        examples = sample(examples, t.max_examples).withColumn(
            ROW, F.xxhash64(S.USER_KEY, S.TARGET_TIME, S.POSITIVE_ITEM).cast("string")
        )
        items = delta.read(spark, cfg.table("gold_item_features")).where(F.col(S.SPLIT) == S.TRAIN)
        profiles = delta.read(spark, cfg.table("gold_user_profiles")).where(F.col(S.SPLIT) == S.TRAIN)
        enc, path = cfg.evaluation.encoder, str(retriever_dir)
        users = encoder.embed(
            texts(examples, items, t.history_items).select(ROW, USER_TEXT), ROW, USER_TEXT, enc, "user", path
        ).withColumnRenamed("vector", rk.USER_VECTOR)
        item_vectors = encoder.embed(
            items.select(S.ITEM_ID, S.ITEM_TEXT), S.ITEM_ID, S.ITEM_TEXT, enc, "item", path
        ).withColumnRenamed("vector", rk.ITEM_VECTOR)
        candidates = pairs(examples, t.ranker.negatives)
        if t.ranker.hard_negatives:
            # the encoder is the costly part: embed once for the retrieval and the rows
            examples = examples.localCheckpoint()
            users, item_vectors = users.localCheckpoint(), item_vectors.localCheckpoint()
            candidates = candidates.unionByName(
                hard_pairs(spark, examples, users, item_vectors, t.ranker, t.seed)
            )
        rows = (
            rk.pair_features(candidates, items, profiles)
            .join(users, ROW)
            .join(item_vectors, S.ITEM_ID)
            .select(*RANKER_EXAMPLES_SCHEMA.fieldNames())
        )
        files = max(4, 2 * t.processes)  # Petastorm shards by row group: several files per split
        delta.replace_where(rows.repartition(files), location, f"{S.SPLIT} IN ('{S.TRAIN}', '{S.VALID}')")
        spark.sql(f"ALTER TABLE {delta.sql_name(location)} SET TBLPROPERTIES ('{SOURCE}' = '{source}')")
    table = delta.read(spark, location)
    counts = {r[0]: r[1] for r in table.groupBy(S.SPLIT).count().collect()}
    if not counts.get(S.TRAIN):
        raise ShoprecError(f"{location}: no train examples for the ranker; check gold_training_examples")
    first = table.select(F.size(rk.USER_VECTOR)).first()
    dim = int(first[0]) if first else 0
    log.info("ranker examples: %s -> %s", counts, location)
    return RankerExamples(location, counts.get(S.TRAIN, 0), counts.get(S.VALID, 0), dim)


@dataclass
class RankerSpec:
    """What every ranker process needs (picklable)."""

    files: list[str]
    valid_files: list[str]
    dim: int
    output: str
    cfg: RankerConfig
    seed: int = 17
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None


@dataclass
class RankerResult:
    rank: int
    examples: int = 0
    seconds: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)
    student_losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    checksum: float = 0.0


def _batch(b: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    return tuple(b[k].float() for k in rk.LOADER_FIELDS)


def _fit(
    spec: RankerSpec, model: rk.Ranker, name: str, teacher: rk.Ranker | None, result: RankerResult
) -> list[float]:
    """Epochs over this rank's shard; returns the mean loss of each epoch over all ranks."""
    rank, size = dist.rank(), dist.size()
    cfg = spec.cfg
    optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate * size)
    dist.broadcast_state(model, None, f"{name}.")  # a fresh optimizer has no state to send
    optimizer = dist.distributed_optimizer(optimizer, model, f"{name}.")
    losses = []
    for epoch in range(cfg.epochs):
        total, batches = 0.0, 0
        reader = make_reader(
            spec.files, rk.LOADER_FIELDS, shard=rank, shard_count=size, shuffle=True, seed=spec.seed + epoch
        )
        with reader:
            for b in make_loader(reader, cfg.batch_size):
                users, items, feats, click, purchase = _batch(b)
                logits = model(users, items, feats)
                if teacher is None:
                    loss = rk.loss(logits, click, purchase)
                else:
                    with torch.no_grad():
                        target = teacher(users, items, feats)
                    loss = rk.distill_loss(logits, target)
                model.zero_grad(set_to_none=True)  # Horovod's optimizer wrapper lacks set_to_none
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach())
                batches += 1
                result.examples += len(click)
        if batches == 0:
            raise ShoprecError(
                f"rank {rank} read no ranker examples in epoch {epoch} from {len(spec.files)} files"
            )
        dist.join()
        mean = float(dist.allreduce_mean(torch.tensor(total / batches), f"{name}.loss.{epoch}"))
        losses.append(mean)
        if rank == 0:
            log.info("%s epoch %d: mean loss %.4f", name, epoch, mean)
    return losses


def _predict(model: rk.Ranker, files: list[str]) -> dict[str, NDArray[Any]]:
    """Logits and labels for every row of ``files`` (rank 0, the validation split)."""
    out: dict[str, list[NDArray[Any]]] = {"logits": [], "dot": [], rk.CLICK: [], rk.PURCHASE: []}
    with make_reader(files, rk.LOADER_FIELDS) as reader, torch.inference_mode():
        for b in make_loader(reader, 4096):
            users, items, feats, click, purchase = _batch(b)
            out["logits"].append(model(users, items, feats).numpy())
            out["dot"].append((users * items).sum(-1).numpy())
            out[rk.CLICK].append(click.numpy())
            out[rk.PURCHASE].append(purchase.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _metrics(pred: dict[str, NDArray[Any]], prefix: str) -> dict[str, float]:
    p_click, p_purchase = rk.sigmoid(pred["logits"][:, 0]), rk.sigmoid(pred["logits"][:, 1])
    found = {
        f"{prefix}click_auc": rk.auc(pred[rk.CLICK], p_click),
        f"{prefix}purchase_auc": rk.auc(pred[rk.PURCHASE], p_purchase),
        f"{prefix}click_logloss": rk.log_loss(pred[rk.CLICK], p_click),
    }
    return {k: v for k, v in found.items() if v is not None}


def ranker_worker(spec: RankerSpec) -> RankerResult:
    """One ranker training process (any rank); rank 0 evaluates on the validation split and saves."""
    rank, size = dist.rank(), dist.size()
    torch.manual_seed(spec.seed)
    torch.set_num_threads(max(1, torch.get_num_threads() // max(1, size)))
    result = RankerResult(rank)
    started = time.perf_counter()
    cfg = spec.cfg
    model = rk.Ranker(spec.dim, len(rk.FEATURE_NAMES), cfg.hidden)
    model.train()
    result.epoch_losses = _fit(spec, model, "ranker", None, result)
    model.eval()
    student = None
    if cfg.student_hidden:
        student = rk.Ranker(spec.dim, len(rk.FEATURE_NAMES), cfg.student_hidden)
        result.student_losses = _fit(spec, student, "student", model, result)
        student.eval()
    result.seconds = time.perf_counter() - started
    result.checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    if rank != 0:
        return result
    out = Path(spec.output)
    meta = {"weights": dataclasses.asdict(cfg.weights), "parameters": rk.param_count(model)}
    if spec.valid_files:
        pred = _predict(model, spec.valid_files)
        result.metrics.update(_metrics(pred, "valid_ranker_"))
        dot_auc = rk.auc(pred[rk.CLICK], pred["dot"])
        if dot_auc is not None:
            result.metrics["valid_retriever_click_auc"] = dot_auc
        if student is not None:
            result.metrics.update(_metrics(_predict(student, spec.valid_files), "valid_student_"))
    rk.save(model, out, {**meta, "metrics": result.metrics})
    if student is not None:
        rk.save(student, out, {"student_parameters": rk.param_count(student)}, rk.STUDENT_FILE)
    log.info("ranker: %s -> %s", {k: round(v, 4) for k, v in result.metrics.items()}, out)
    return result


def train_ranker(
    spark: SparkSession,
    cfg: ShoprecConfig,
    retriever_dir: Path,
    client: Any = None,
    run_id: str | None = None,
) -> tuple[Path, list[RankerResult]]:
    """Prepare the ranker's examples for the retriever at ``retriever_dir``, train, log to MLflow."""
    t = cfg.training
    prepared = prepare_examples(spark, cfg, retriever_dir)
    files = snapshot_files(spark, prepared.location, {S.SPLIT: S.TRAIN})
    valid = snapshot_files(spark, prepared.location, {S.SPLIT: S.VALID}) if prepared.valid_rows else []
    output = retriever_dir / rk.RANKER_DIR
    spec = RankerSpec(files, valid, prepared.dim, str(output), t.ranker, t.seed)
    processes = 1 if t.launcher == "single" else t.processes
    started = time.perf_counter()
    results = dist.launch(ranker_worker, processes, t.launcher, args=(spec,))
    seconds = time.perf_counter() - started
    if client is not None and run_id:
        for key, value in dataclasses.asdict(t.ranker).items():
            client.log_param(run_id, f"ranker_{key}", str(value)[:500])
        client.log_param(run_id, "ranker_train_examples", prepared.train_rows)
        for i, loss in enumerate(results[0].epoch_losses):
            client.log_metric(run_id, "ranker_loss", loss, step=i)
        for i, loss in enumerate(results[0].student_losses):
            client.log_metric(run_id, "student_loss", loss, step=i)
        for key, value in results[0].metrics.items():
            client.log_metric(run_id, key, value)
        client.log_metric(run_id, "ranker_seconds", seconds)
    log.info(
        "ranker trained on %d examples (%d processes) in %.0fs -> %s",
        prepared.train_rows,
        processes,
        seconds,
        output,
    )
    return output, results
