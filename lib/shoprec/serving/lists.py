"""What a served list is, wherever it is made: a view of the shop (the serving state, or an
evaluation split's past) → user vectors and candidates from every source → the ranker's scores
(the learning-to-rank model, else the torch head in an Arrow UDF) → a scenario's business rules.

``shoprec score`` writes these lists to Delta and ``shoprec evaluate`` measures them; both import
this layer, neither imports the other.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from shoprec import registry
from shoprec import schemas as S
from shoprec.config import ScenarioConfig, ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.modeling import candidates, encoder, ltr, retrieval
from shoprec.modeling import ranker as rk
from shoprec.modeling.retrieval import ItemMatrix
from shoprec.modeling.text import history_texts
from shoprec.modeling.towers import load_meta
from shoprec.serving import model as scoring_model
from shoprec.serving import reasons, rules

log = logging.getLogger(__name__)

#: A pair's flags, in the low bits of its code through the ranker (:data:`rk.PAIR_CODE`): its
#: sources (a bit each, :data:`SOURCES` order) and whether the user already bought the item.
BOUGHT_BIT = 1 << len(candidates.SOURCES)
assert BOUGHT_BIT < 1 << rk.CODE_SHIFT
#: Scored candidates, staged between the ranker and the rules (one row per user and candidate).
SCORED_SCHEMA = StructType(
    [
        StructField(S.USER_KEY, StringType(), False),
        StructField(S.ITEM_ID, StringType(), False),
        StructField(S.SOURCE, StringType(), False),
        StructField(rk.P_CLICK, FloatType(), False),
        StructField(rk.P_PURCHASE, FloatType(), False),
        StructField(rk.VALUE, FloatType(), False),
        StructField(S.IN_STOCK, BooleanType(), False),
        StructField(rules.BOUGHT, BooleanType(), False),
        StructField(S.TOP_CATEGORY, StringType(), True),
        StructField(rules.BAND_GAP, FloatType(), False),
        StructField(rules.DISCOUNT, FloatType(), False),
        StructField(S.RUN_ID, StringType(), False),
    ]
)
LIST_SCHEMA = StructType(
    [
        StructField(S.USER_KEY, StringType(), False),
        StructField(S.ITEM_ID, StringType(), False),
        StructField(S.RANK, IntegerType(), False),
        StructField(S.SCORE, DoubleType(), False),
        StructField(S.SOURCE, StringType(), False),
        StructField(rules.RULES, ArrayType(StringType(), False), False),
    ]
)


def resolve_model(cfg: ShoprecConfig) -> tuple[Path, str]:
    """The model directory to score with and its version: ``scoring.model_path`` (the directory's
    name is the version), else the registered model ``scoring.model_uri`` (default: the champion)."""
    if not cfg.scoring.model_path:
        path, version = registry.resolve(cfg)
    else:
        path = Path(cfg.scoring.model_path)
        version = path.name
    if not (path / rk.RANKER_DIR / rk.RANKER_FILE).is_file():
        raise ShoprecError(
            f"model version {version!r} has no ranker ({path / rk.RANKER_DIR / rk.RANKER_FILE} is missing): "
            "train with training.ranker.enabled, or point scoring.model_path at a directory "
            "`shoprec train` wrote"
        )
    return path, version


def check_candidates(cands: DataFrame, items: DataFrame) -> int:
    """Stop on an empty candidate set or candidates that are not in the serving catalog."""
    n = cands.count()
    if n == 0:
        raise ShoprecError("the candidate set is empty: no serving users or no serving items to score")
    unknown = cands.join(items.select(S.ITEM_ID), S.ITEM_ID, "left_anti")
    missing = unknown.select(S.ITEM_ID).distinct().limit(5).collect()
    if missing:
        names = ", ".join(r[0] for r in missing)
        raise ShoprecError(
            f"candidates name items absent from the serving catalog (e.g. {names}): "
            "re-run `shoprec features` so item features and embeddings agree"
        )
    return n


def score_candidates(
    spark: SparkSession,
    cfg: ShoprecConfig,
    cands: DataFrame,
    users: DataFrame,
    item_vectors: DataFrame,
    items: DataFrame,
    profiles: DataFrame,
    purchases: DataFrame,
    model_dir: Path,
    loads: Any = None,
) -> DataFrame:
    """``cands`` (user_key, item_id, source) with the ranker's heads and the rules' inputs.

    Pairs travel grouped by user (:func:`shoprec.serving.model.score`): the user's vector and
    taste shares once, each candidate as its item's row in a broadcast item matrix plus one int
    coding its pair features and flags; the item's own features are broadcast with the matrix.
    A catalog whose vectors are over ``evaluation.broadcast_mib`` is scored in item-id shards, one
    broadcast at a time, each shard's pairs checkpointed before its broadcast is destroyed: the
    driver and every executor hold one shard, never the catalog."""
    shards = retrieval.shard_count(item_vectors, cfg.evaluation.broadcast_mib, "ranker")
    pairs = rk.pair_codes(cands, items, profiles)  # item features: by row, in the task
    if shards > 1:
        pairs = pairs.localCheckpoint()  # read once per shard
        users = users.localCheckpoint()
    parts = []
    for matrix in retrieval.item_shards(item_vectors, shards):
        part, broadcasts = _score_shard(
            spark, cfg, pairs, users, matrix, items, profiles, purchases, model_dir, loads
        )
        if shards > 1:
            part = part.localCheckpoint()  # scored while this shard's broadcasts live
            for bc in broadcasts:
                bc.destroy()
        parts.append(part)
    if not parts:
        raise ShoprecError("no item embeddings to score candidates with: is the serving catalog empty?")
    return functools.reduce(DataFrame.unionByName, parts)


def _score_shard(
    spark: SparkSession,
    cfg: ShoprecConfig,
    pairs: DataFrame,
    users: DataFrame,
    matrix: ItemMatrix,
    items: DataFrame,
    profiles: DataFrame,
    purchases: DataFrame,
    model_dir: Path,
    loads: Any,
) -> tuple[DataFrame, list[Any]]:
    """:func:`score_candidates` for the pairs whose item is in ``matrix``, and its broadcasts."""
    sc = cfg.scoring
    index = F.broadcast(matrix.index(spark).withColumnRenamed("_idx", scoring_model.ITEM_INDEX))
    pairs = pairs.join(index, S.ITEM_ID).join(
        purchases.withColumn(rules.BOUGHT, F.lit(True)), [S.USER_KEY, S.ITEM_ID], "left"
    )
    # what belongs to the pair alone rides in the low bits of its code: its sources and whether
    # it was bought; the band gap comes back from the code's features
    flags = candidates.source_code(F.col(S.SOURCE)) + F.when(F.col(rules.BOUGHT), BOUGHT_BIT).otherwise(0)
    grouped = (
        scoring_model.group_candidates(pairs.withColumn(rk.PAIR_CODE, F.col(rk.PAIR_CODE) + flags))
        .join(users.select(S.USER_KEY, F.col("vector").alias(rk.USER_VECTOR)), S.USER_KEY)
        .join(rk.profile_shares(profiles), S.USER_KEY, "left")
    )
    # the same batches on every run (by user, sorted): identical floating-point results on a re-run
    grouped = grouped.repartition(2 * spark.sparkContext.defaultParallelism, S.USER_KEY).sortWithinPartitions(
        S.USER_KEY
    )
    mine = items.join(index.select(S.ITEM_ID), S.ITEM_ID, "left_semi")
    bc = spark.sparkContext.broadcast(matrix.matrix)
    item_feats = spark.sparkContext.broadcast(scoring_model.item_feature_matrix(mine, matrix.ids))
    ranker_dir = str(model_dir / rk.RANKER_DIR)
    scored = scoring_model.score(
        grouped,
        ranker_dir,
        bc,
        sc.use_student,
        sc.batch_size,
        sc.threads,
        loads,
        item_features=item_feats,
    )
    item_side = index.join(items, S.ITEM_ID).select(
        scoring_model.ITEM_INDEX,
        S.ITEM_ID,
        rk.item_value().alias(rk.VALUE),
        S.IN_STOCK,
        S.TOP_CATEGORY,
        rk.item_feature("discount").alias(rules.DISCOUNT),
    )
    out = scored.join(F.broadcast(item_side), scoring_model.ITEM_INDEX).select(
        S.USER_KEY,
        S.ITEM_ID,
        candidates.source_name(F.col(rk.PAIR_CODE).bitwiseAND(BOUGHT_BIT - 1)).alias(S.SOURCE),
        rk.P_CLICK,
        rk.P_PURCHASE,
        rk.VALUE,
        S.IN_STOCK,
        (F.col(rk.PAIR_CODE).bitwiseAND(BOUGHT_BIT) != 0).alias(rules.BOUGHT),
        S.TOP_CATEGORY,
        rk.band_gap_of(F.col(rk.PAIR_CODE)).alias(rules.BAND_GAP),
        rules.DISCOUNT,
    )
    return out, [bc, item_feats]


def rerank(staged: DataFrame, sc: ScenarioConfig, item_vectors: DataFrame | None) -> DataFrame:
    """Each user's list for scenario ``sc`` (:data:`LIST_SCHEMA`) from the staged candidates; MMR
    reads the item vectors, joined here only for a scenario that uses it."""
    if sc.diversity == "mmr":
        if item_vectors is None:
            raise ShoprecError(f"scoring.scenarios[{sc.name}]: diversity 'mmr' needs the item vectors")
        vectors = item_vectors.select(S.ITEM_ID, F.col("vector").alias(rk.ITEM_VECTOR))
        staged = staged.join(vectors, S.ITEM_ID)
    fields = [f for f in SCORED_SCHEMA.fieldNames() if f != S.RUN_ID]  # what staging holds
    fields += [rk.ITEM_VECTOR] if sc.diversity == "mmr" else []
    # each user's rows together and in one partition, so a task re-ranks whole users in batches
    by_user = staged.select(*fields).repartition(S.USER_KEY).sortWithinPartitions(S.USER_KEY)
    return by_user.mapInArrow(rules.arrow_runner(sc, fields), LIST_SCHEMA)


@dataclass(frozen=True)
class AsOf:
    """The gold state lists are made from: the serving split, or an evaluation split's past."""

    items: DataFrame
    profiles: DataFrame
    sequences: DataFrame
    interactions: DataFrame  # what ALS, popularity and the already-bought rule may see
    item_vectors: DataFrame  # (item_id, vector) by the model's item tower
    only: DataFrame | None = None  # score only these users (``user_key``)


@dataclass(frozen=True)
class Pool:
    """A view's users and their candidates, with what retrieving them computed."""

    users: DataFrame  # (user_key, vector): the retriever's user vectors
    cands: DataFrame  # (user_key, item_id, source)
    item_vectors: DataFrame  # (item_id, vector), checkpointed: retrieval, the ranker and MMR read them
    scored: DataFrame  # cands with each source's score and rank (the learning-to-rank inputs)
    signals: candidates.Signals


def user_candidates(
    spark: SparkSession,
    cfg: ShoprecConfig,
    model_dir: Path,
    view: AsOf,
    common: candidates.Shared | None = None,
) -> Pool:
    """User vectors, their candidates from every source, and the item vectors they came from
    (``common``: the signals every user shares, when the caller keeps them between calls)."""
    history = int(load_meta(model_dir).get("history_items", cfg.training.history_items))
    sequences = view.sequences
    if view.only is not None:  # before the texts are built: a micro-batch's users, not everyone's
        sequences = sequences.join(view.only, S.USER_KEY, "left_semi")
    texts = history_texts(view.items, sequences, None, history)
    users = encoder.embed(texts, S.USER_KEY, "text", cfg.evaluation.encoder, "user", str(model_dir))
    users = users.localCheckpoint()
    item_vectors = view.item_vectors.localCheckpoint()
    scored, signals = candidates.generate(
        spark, cfg, users, item_vectors, view.items, view.profiles, view.interactions, str(model_dir), common
    )
    scored = scored.localCheckpoint()
    cands = scored.select(S.USER_KEY, S.ITEM_ID, S.SOURCE)
    return Pool(users, cands, item_vectors, scored, signals)


def score_view(
    spark: SparkSession,
    cfg: ShoprecConfig,
    model_dir: Path,
    view: AsOf,
    pool: Pool,
    loads: Any = None,
    head: str = "chosen",
    given: bool = False,
) -> DataFrame:
    """The ranker's scores and the rules' inputs for every candidate of ``view``: the
    learning-to-rank model's where training kept it, else the torch head's (``head="torch"``:
    the torch head's always, which evaluation measures beside the model that serves).
    ``given``: ``pool`` is a set someone else chose (sampled evaluation's), ordered by the
    given-set model where training kept one (``training.ranker.lightgbm.given_negatives``)."""
    purchases = (
        view.interactions.where(F.col(S.EVENT_TYPE) == "purchase").select(S.USER_KEY, S.ITEM_ID).distinct()
    )
    ranker_dir = model_dir / rk.RANKER_DIR
    meta = ltr.model_meta(model_dir) or {}
    if meta.get("chosen") == "lightgbm" and head != "torch":
        if given and ltr.exists(ranker_dir / ltr.GIVEN_DIR):
            return ltr_candidates(
                pool, view, purchases, ranker_dir / ltr.GIVEN_DIR, ltr.load_meta(ranker_dir / ltr.GIVEN_DIR)
            )
        return ltr_candidates(pool, view, purchases, ranker_dir, meta)
    return score_candidates(
        spark,
        cfg,
        pool.cands,
        pool.users,
        pool.item_vectors,
        view.items,
        view.profiles,
        purchases,
        model_dir,
        loads,
    )


def credited_kinds(model_dir: Path, view: AsOf, pool: Pool, listed: DataFrame) -> DataFrame:
    """``(user_key, item_id, reason_kind)`` for the ``listed`` pairs: the kind the learning-to-rank
    model credits most (:mod:`shoprec.serving.reasons`), null where it credits none or the torch
    head ranks. The features are assembled again for these pairs only: SHAP values cost about a
    hundred predictions each, so they are computed for what is served, not for every candidate."""
    meta = ltr.model_meta(model_dir) or {}
    pairs = listed.select(S.USER_KEY, S.ITEM_ID).distinct()
    if meta.get("chosen") != "lightgbm":
        return pairs.withColumn(reasons.KIND_COLUMN, F.lit(None).cast("string"))
    names = ltr.feature_names(candidates.SOURCES)
    scored = pool.scored.join(pairs, [S.USER_KEY, S.ITEM_ID], "left_semi")
    feats = pool.signals.features(scored, pool.users, pool.item_vectors, view.items, view.profiles)
    credited = ltr.predict_frame(feats, str(model_dir / rk.RANKER_DIR), names, reasons.groups(names))
    return credited.select(
        S.USER_KEY, S.ITEM_ID, reasons.kind_of_group(F.col(ltr.TOP_GROUP)).alias(reasons.KIND_COLUMN)
    )


def ltr_candidates(
    pool: Pool, view: AsOf, purchases: DataFrame, ranker_dir: Path, meta: dict[str, Any]
) -> DataFrame:
    """:func:`score_candidates`' output, ordered by the learning-to-rank model: its calibrated
    probability (:func:`shoprec.modeling.ltr.calibrate`) stands for both heads, so the rules'
    click and purchase weights scale one ranking and their boosts meet a probability's scale."""
    sig = pool.signals
    names = ltr.feature_names(candidates.SOURCES)
    if meta["features"] != names:
        raise ShoprecError(
            f"{ranker_dir}: the ranking model was trained on other features than this shoprec computes; "
            "retrain it (`shoprec train`)"
        )
    feats = sig.features(pool.scored, pool.users, pool.item_vectors, view.items, view.profiles)
    scored = ltr.predict_frame(feats, str(ranker_dir), names)
    p = ltr.probability(F.col(ltr.LTR_SCORE), meta)
    item_side = view.items.select(
        S.ITEM_ID,
        rk.item_value().alias(rk.VALUE),
        S.IN_STOCK,
        S.TOP_CATEGORY,
        rk.item_feature("discount").alias(rules.DISCOUNT),
    )
    gaps = rk.pair_codes(pool.cands, view.items, view.profiles).select(
        S.USER_KEY, S.ITEM_ID, S.SOURCE, rk.band_gap_of(F.col(rk.PAIR_CODE)).alias(rules.BAND_GAP)
    )
    return (
        scored.join(gaps, [S.USER_KEY, S.ITEM_ID])
        .join(F.broadcast(item_side), S.ITEM_ID)
        .join(purchases.withColumn(rules.BOUGHT, F.lit(True)), [S.USER_KEY, S.ITEM_ID], "left")
        .select(
            S.USER_KEY,
            S.ITEM_ID,
            S.SOURCE,
            p.cast("float").alias(rk.P_CLICK),
            p.cast("float").alias(rk.P_PURCHASE),
            rk.VALUE,
            S.IN_STOCK,
            F.coalesce(F.col(rules.BOUGHT), F.lit(False)).alias(rules.BOUGHT),
            S.TOP_CATEGORY,
            rules.BAND_GAP,
            rules.DISCOUNT,
        )
    )
