"""Training the ranking head after the retriever: examples in Spark → Delta → Petastorm → Horovod.

1. :func:`prepare_examples` writes ``ranker_examples``: for the gold examples
   ``ranker.fit_split`` picks (:func:`fit_examples`; by default the validation split's, whose
   features predate their events as they do at scoring time), the positive (click = 1,
   purchase = 1 when the event was a purchase) and up to ``ranker.negatives`` of its sampled
   negatives (0, 0) and ``ranker.hard_negatives`` drawn from the retriever's own top items for
   the example (:func:`hard_pairs`), each with the fine-tuned retriever's user vector (of the
   example's own history text) and item vector, and the pair features.
2. :func:`ranker_worker` runs in every training process (the retriever's launcher and process
   count): sharded Petastorm reads, a Horovod ``DistributedOptimizer``, mean loss per epoch over
   all ranks; the share of the correction to keep is chosen on the validation lists
   (:func:`choose_correction`); rank 0 then scores the validation split and saves the ranker
   (and its distilled student) beside the retriever.
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
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType
from pyspark.sql.window import Window

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import RankerConfig, ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.modeling import ranker as rk
from shoprec.training import distributed as dist
from shoprec.training.data import make_loader, make_reader, snapshot_files
from shoprec.training.prepare import USER_TEXT, sample, texts

log = logging.getLogger(__name__)

_FLOATS = ArrayType(FloatType(), False)
#: One row per example: the user's vector and its candidate list, flattened to fixed-size arrays
#: (``candidates(cfg)`` entries; item vectors ``n x dim``, features ``n x len(FEATURE_NAMES)``).
RANKER_EXAMPLES_SCHEMA = StructType(
    [
        StructField(S.SPLIT, StringType(), False),
        StructField(S.USER_KEY, StringType(), False),
        StructField(rk.USER_VECTOR, _FLOATS, False),
        StructField(rk.ITEM_VECTORS, _FLOATS, False),
        StructField(rk.FEATURES, _FLOATS, False),
        StructField(rk.CLICK, _FLOATS, False),
        StructField(rk.PURCHASE, _FLOATS, False),
        StructField(rk.MASK, _FLOATS, False),
        StructField(rk.HARD, _FLOATS, False),
    ]
)
#: Bump when the layout of ``ranker_examples`` or how its lists are drawn changes: the table is rebuilt.
LAYOUT = "listwise-2"
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
    shape: list[Any] = [
        str(retriever_dir),
        t.max_examples,
        t.history_items,
        r.negatives,
        r.fit_split,
        r.holdout,
    ]
    shape += [r.hard_negatives, r.hard_pool, list(rk.FEATURE_NAMES), LAYOUT]
    text = json.dumps([[v[0] if v else None for v in versions], shape])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def candidates(cfg: RankerConfig) -> int:
    """Candidates per example: the positive, its random and its hard negatives."""
    return 1 + cfg.negatives + cfg.hard_negatives


def pairs(examples: DataFrame, negatives: int) -> DataFrame:
    """One row per (example, candidate): the positive with its labels, then ``negatives`` negatives."""
    base = [ROW, S.SPLIT, S.USER_KEY]
    positive = examples.select(
        *base,
        F.col(S.POSITIVE_ITEM).alias(S.ITEM_ID),
        F.lit(1.0).cast("float").alias(rk.CLICK),
        F.when(F.col(S.EVENT_TYPE) == "purchase", 1.0).otherwise(0.0).cast("float").alias(rk.PURCHASE),
        F.lit(0.0).cast("float").alias(rk.HARD),
    )
    negative = examples.select(
        *base, F.explode(F.slice(S.NEGATIVE_ITEMS, 1, negatives)).alias(S.ITEM_ID)
    ).select(
        *base,
        S.ITEM_ID,
        F.lit(0.0).cast("float").alias(rk.CLICK),
        F.lit(0.0).cast("float").alias(rk.PURCHASE),
        F.lit(0.0).cast("float").alias(rk.HARD),
    )
    return positive.unionByName(negative)


def hard_pairs(
    spark: SparkSession,
    examples: DataFrame,
    users: DataFrame,
    item_vectors: DataFrame,
    cfg: RankerConfig,
    seed: int,
    broadcast_mib: float = 1024.0,
) -> DataFrame:
    """Negatives like the ones scoring puts before the head: ``cfg.hard_negatives`` items drawn
    (by a seeded hash, so reproducibly) from the retriever's top ``cfg.hard_pool`` for each
    example's user vector, the positive excluded. Same columns as :func:`pairs`.

    Only for examples whose positive is itself in that pool: scoring can only rank a positive
    the retriever found, among the retriever's other top items. Drawing hard negatives for the
    others too teaches the opposite of what scoring needs: their positive sits below every hard
    negative by cosine, so the head learns to push the retriever's best items down (on Office
    that halved Recall@10 of the scored lists)."""
    from shoprec.modeling.retrieval import VECTOR, top_k_from

    matrix = item_vectors.select(S.ITEM_ID, F.col(rk.ITEM_VECTOR).alias(VECTOR))
    queries = users.select(F.col(ROW).alias(S.USER_KEY), F.col(rk.USER_VECTOR).alias(VECTOR))
    positives = examples.select(F.col(ROW).alias(S.USER_KEY), F.col(S.POSITIVE_ITEM).alias(S.ITEM_ID))
    top = top_k_from(spark, queries, matrix, cfg.hard_pool, broadcast_mib=broadcast_mib)
    found = top.join(positives, [S.USER_KEY, S.ITEM_ID], "left_semi").select(S.USER_KEY)
    pool = top.join(found, S.USER_KEY, "left_semi").join(positives, [S.USER_KEY, S.ITEM_ID], "left_anti")
    draw = Window.partitionBy(S.USER_KEY).orderBy(F.xxhash64(S.USER_KEY, S.ITEM_ID, F.lit(seed)))
    drawn = pool.withColumn("_n", F.row_number().over(draw)).where(F.col("_n") <= cfg.hard_negatives)
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
            F.lit(1.0).cast("float").alias(rk.HARD),
        )
    )


def _padded(values: Column, n: int, width: int) -> Column:
    """A list of ``width``-long arrays (or scalars, width 1) as one flat array of ``n x width``
    floats, zero-padded when the list is shorter than ``n``."""
    flat = F.flatten(values) if width > 1 else values
    missing = (F.lit(n) - F.size(values)) * width
    return F.concat(flat, F.array_repeat(F.lit(0.0).cast("float"), missing)).cast("array<float>")


def example_lists(pairs_: DataFrame, users: DataFrame, n: int, dim: int) -> DataFrame:
    """Pair rows (``_row``, split, user, item vector, features, labels, hard) → one row per example
    in :data:`RANKER_EXAMPLES_SCHEMA`: the positive first, then the negatives in a fixed order
    (by item hash), at most ``n``, padded."""
    fields = [rk.ITEM_VECTOR, rk.FEATURES, rk.CLICK, rk.PURCHASE, rk.HARD]
    ordered = F.sort_array(
        F.collect_list(F.struct((-F.col(rk.CLICK)).alias("_o"), F.xxhash64(S.ITEM_ID).alias("_h"), *fields))
    )
    lists = pairs_.groupBy(ROW, S.SPLIT, S.USER_KEY).agg(F.slice(ordered, 1, n).alias("_c"))
    c = F.col("_c")
    k = len(rk.FEATURE_NAMES)
    return lists.join(users, ROW).select(
        S.SPLIT,
        S.USER_KEY,
        rk.USER_VECTOR,
        _padded(F.transform(c, lambda x: x[rk.ITEM_VECTOR]), n, dim).alias(rk.ITEM_VECTORS),
        _padded(F.transform(c, lambda x: x[rk.FEATURES]), n, k).alias(rk.FEATURES),
        _padded(F.transform(c, lambda x: x[rk.CLICK]), n, 1).alias(rk.CLICK),
        _padded(F.transform(c, lambda x: x[rk.PURCHASE]), n, 1).alias(rk.PURCHASE),
        _padded(F.transform(c, lambda x: F.lit(1.0).cast("float")), n, 1).alias(rk.MASK),
        _padded(F.transform(c, lambda x: x[rk.HARD]), n, 1).alias(rk.HARD),
    )


def fit_examples(gold: DataFrame, cfg: RankerConfig, max_examples: int | None) -> DataFrame:
    """The gold examples the head trains on (``split`` train) and is validated on (``split``
    valid), by ``cfg.fit_split``: the validation split's examples, a hash of the user sending
    ``cfg.holdout`` of them to validation (a user's examples stay together); or the training
    split's, validated on the validation split's."""
    if cfg.fit_split == "train":
        return sample(gold.where(F.col(S.SPLIT).isin(S.TRAIN, S.VALID)), max_examples)
    held = (F.abs(F.xxhash64(S.USER_KEY, F.lit("ranker-holdout"))) % 10_000) < round(cfg.holdout * 10_000)
    chosen = sample(gold.where(F.col(S.SPLIT) == S.VALID), max_examples)
    return chosen.withColumn(S.SPLIT, F.when(held, F.lit(S.VALID)).otherwise(F.lit(S.TRAIN)))


def prepare_examples(spark: SparkSession, cfg: ShoprecConfig, retriever_dir: Path) -> RankerExamples:
    """Write ``ranker_examples`` (train and valid) from the gold examples and the retriever at
    ``retriever_dir``; skipped when the table was made from the same inputs."""
    from shoprec.modeling import encoder

    t = cfg.training
    location = cfg.table("ranker_examples")
    source = _source(spark, cfg, retriever_dir)
    delta.ensure_table(spark, location, RANKER_EXAMPLES_SCHEMA, [S.SPLIT])
    n = candidates(t.ranker)
    if delta.properties(spark, location).get(SOURCE) != source:
        examples = fit_examples(
            delta.read(spark, cfg.table("gold_training_examples")), t.ranker, t.max_examples
        )
        examples = examples.withColumn(
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
        # the encoder is the costly part: embed once for the retrieval and the rows
        examples = examples.localCheckpoint()
        users, item_vectors = users.localCheckpoint(), item_vectors.localCheckpoint()
        listed = pairs(examples, t.ranker.negatives)
        if t.ranker.hard_negatives:
            hard = hard_pairs(
                spark, examples, users, item_vectors, t.ranker, t.seed, cfg.evaluation.broadcast_mib
            )
            listed = listed.unionByName(hard)
        first = item_vectors.select(F.size(rk.ITEM_VECTOR)).first()
        dim = int(first[0]) if first else 0
        featured = rk.pair_features(listed, items, profiles).join(item_vectors, S.ITEM_ID)
        rows = example_lists(featured, users, n, dim).select(*RANKER_EXAMPLES_SCHEMA.fieldNames())
        files = max(4, 2 * t.processes)  # Petastorm shards by row group: several files per split
        # the whole table: its layout may have changed since an older shoprec wrote it
        delta.overwrite(rows.repartition(files), location, [S.SPLIT])
        delta.set_property(spark, location, SOURCE, source)
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
    skip_init: float = rk.SKIP_INIT
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
    """``user (B, d)``, ``items (B, n, d)``, ``features (B, n, f)``, then ``(B, n)`` click,
    purchase, mask and hard."""
    users, items, feats, click, purchase, mask, hard = (b[k].float() for k in rk.LOADER_FIELDS)
    n = click.shape[1]
    return (
        users,
        items.reshape(len(users), n, -1),
        feats.reshape(len(users), n, -1),
        click,
        purchase,
        mask,
        hard,
    )


def list_logits(
    model: rk.Ranker, users: torch.Tensor, items: torch.Tensor, feats: torch.Tensor
) -> torch.Tensor:
    """``(B, n, 2)``: the pairwise model over every (user, candidate) of each list."""
    b, n, d = items.shape
    flat: torch.Tensor = model(
        users.repeat_interleave(n, 0), items.reshape(b * n, d), feats.reshape(b * n, -1)
    )
    return flat.reshape(b, n, 2)


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
                users, items, feats, click, purchase, mask, hard = _batch(b)
                logits = list_logits(model, users, items, feats)
                if teacher is None:
                    loss = rk.listwise_loss(
                        logits, click, purchase, mask, hard, cfg.calibration, cfg.hard_lists
                    )
                else:
                    with torch.no_grad():
                        target = list_logits(teacher, users, items, feats)
                    loss = rk.distill_loss(logits[mask > 0], target[mask > 0])
                model.zero_grad(set_to_none=True)  # Horovod's optimizer wrapper lacks set_to_none
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach())
                batches += 1
                result.examples += int(mask.sum())
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
    """Per list of ``files`` (rank 0, the validation split): ``(lists, n, 2)`` logits, the
    retriever's dot products, labels and masks."""
    keys = ("logits", "dot", rk.CLICK, rk.PURCHASE, rk.MASK, rk.HARD)
    out: dict[str, list[NDArray[Any]]] = {k: [] for k in keys}
    with make_reader(files, rk.LOADER_FIELDS) as reader, torch.inference_mode():
        for b in make_loader(reader, 1024):
            users, items, feats, click, purchase, mask, hard = _batch(b)
            out["logits"].append(list_logits(model, users, items, feats).numpy())
            out["dot"].append((users.unsqueeze(1) * items).sum(-1).numpy())
            for k, v in ((rk.CLICK, click), (rk.PURCHASE, purchase), (rk.MASK, mask), (rk.HARD, hard)):
                out[k].append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def positive_mrr(scores: NDArray[Any], labels: NDArray[Any], mask: NDArray[Any]) -> float | None:
    """Mean reciprocal rank of each list's positive among its own candidates (ties count against
    it): how well the scores order what scoring puts before them."""
    has = labels.sum(1) > 0
    if not has.any():
        return None
    s = np.where(mask > 0, scores, -np.inf)[has]
    pos = np.where(labels[has] > 0, s, -np.inf).max(1)  # the (best) positive's score
    rank = 1 + ((s >= pos[:, None]) & (labels[has] <= 0)).sum(1)
    return float(np.mean(1.0 / rank))


def hard_lists(pred: dict[str, NDArray[Any]]) -> NDArray[Any]:
    """The mask of each list's positive and hard negatives, for lists that have hard negatives:
    the retriever's top items around a positive it found, the order scoring's lists need."""
    hard = pred[rk.HARD] > 0
    keep = (hard | (pred[rk.CLICK] > 0)) & hard.any(1, keepdims=True)
    out: NDArray[Any] = pred[rk.MASK] * keep
    return out


def choose_correction(
    pred: dict[str, NDArray[Any]], skip: NDArray[Any], choices: tuple[float, ...]
) -> tuple[float, dict[float, float]]:
    """The share of the MLP's correction to keep (``ranker.corrections``): the one whose click
    logits give the best MRR of positives among their hard negatives on validation lists (the
    smaller share on a tie; the MRR over whole lists when none has hard negatives).

    The correction is learnt from a few thousand lists; at full strength it can reorder the
    retriever's top items by noise (on Office it did: Recall@10 .0728 at 1.0, .0803 at 0.25,
    retriever alone .0795), and this validation measure followed the test split's order."""
    base = pred["dot"][..., None] * skip[None, None, :]
    correction = pred["logits"] - base
    lists = hard_lists(pred)
    if not (lists.sum(1) > 1).any():
        lists = pred[rk.MASK]
    scores: dict[float, float] = {}
    for share in sorted(choices):
        mrr = positive_mrr((base + share * correction)[..., 0], pred[rk.CLICK], lists)
        scores[share] = -1.0 if mrr is None else mrr
    best = max(scores, key=lambda c: (scores[c], -c))
    return best, scores


def _metrics(pred: dict[str, NDArray[Any]], prefix: str) -> dict[str, float]:
    """Pairwise AUCs over every real candidate; listwise MRR over all candidates (the scoring
    task) and over the random negatives only."""
    real = pred[rk.MASK] > 0
    logits = pred["logits"]
    p_click, p_purchase = rk.sigmoid(logits[..., 0][real]), rk.sigmoid(logits[..., 1][real])
    random_only = pred[rk.MASK] * (pred[rk.HARD] <= 0)
    found = {
        f"{prefix}click_auc": rk.auc(pred[rk.CLICK][real], p_click),
        f"{prefix}purchase_auc": rk.auc(pred[rk.PURCHASE][real], p_purchase),
        f"{prefix}click_logloss": rk.log_loss(pred[rk.CLICK][real], p_click),
        f"{prefix}list_mrr": positive_mrr(logits[..., 0], pred[rk.CLICK], pred[rk.MASK]),
        f"{prefix}random_list_mrr": positive_mrr(logits[..., 0], pred[rk.CLICK], random_only),
        f"{prefix}hard_list_mrr": positive_mrr(logits[..., 0], pred[rk.CLICK], hard_lists(pred)),
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
    model = rk.Ranker(spec.dim, len(rk.FEATURE_NAMES), cfg.hidden, spec.skip_init, cfg.product)
    model.train()
    result.epoch_losses = _fit(spec, model, "ranker", None, result)
    model.eval()
    shares: dict[float, float] = {}
    if spec.valid_files and len(cfg.corrections) > 1:
        # every rank reads the same validation lists with the same weights: the same choice
        skip = model.skip.detach().numpy()
        model.correction, shares = choose_correction(_predict(model, spec.valid_files), skip, cfg.corrections)
        if rank == 0:
            log.info(
                "ranker correction kept: %s (validation hard-list MRR by share: %s)", model.correction, shares
            )
    student = None
    if cfg.student_hidden:
        student = rk.Ranker(spec.dim, len(rk.FEATURE_NAMES), cfg.student_hidden, spec.skip_init, cfg.product)
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
        real = pred[rk.MASK] > 0
        retriever = {
            "valid_retriever_click_auc": rk.auc(pred[rk.CLICK][real], pred["dot"][real]),
            "valid_retriever_list_mrr": positive_mrr(pred["dot"], pred[rk.CLICK], pred[rk.MASK]),
            "valid_retriever_hard_list_mrr": positive_mrr(pred["dot"], pred[rk.CLICK], hard_lists(pred)),
            "ranker_correction": model.correction,
        }
        result.metrics.update({k: v for k, v in retriever.items() if v is not None})
        if student is not None:
            result.metrics.update(_metrics(_predict(student, spec.valid_files), "valid_student_"))
    rk.save(model, out, {**meta, "metrics": result.metrics})
    if student is not None:
        rk.save(student, out, {"student_parameters": rk.param_count(student)}, rk.STUDENT_FILE)
    log.info("ranker: %s -> %s", {k: round(v, 4) for k, v in result.metrics.items()}, out)
    return result


def skip_init(cfg: RankerConfig, retriever_dir: Path) -> float:
    """The head's starting weight on the retriever's cosine: ``ranker.skip``, or with ``retriever``
    the retriever's own 1 / temperature, so an untrained head scores as its softmax does."""
    if cfg.skip != "retriever":
        return float(cfg.skip)
    from shoprec.modeling.towers import load_meta

    return 1.0 / float(load_meta(retriever_dir).get("temperature", 1.0 / rk.SKIP_INIT))


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
    spec = RankerSpec(
        files, valid, prepared.dim, str(output), t.ranker, t.seed, skip_init(t.ranker, retriever_dir)
    )
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
