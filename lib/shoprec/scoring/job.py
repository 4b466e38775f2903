"""``shoprec score``: every serving user gets a fresh ranked list per scenario, MERGEd into Delta.

model (the registry's champion, or ``scoring.model_uri`` / ``scoring.model_path``) → item
embeddings (incremental by Change Data Feed) → user vectors → candidates (embedding, ALS,
popular, new items) → pair features → the ranker in an Arrow UDF (scored candidates staged in
Delta) → business rules per scenario → each listed row's reason (:mod:`shoprec.serving.reasons`)
→ one MERGE of every scenario's lists into the recommendations table.

The MERGE replaces each scored user's whole list atomically: its source holds every rank from 1 to
the longest list already stored, empty ranks deleting what a longer old list had. Rows whose
content did not change are not rewritten, so running the same run again changes nothing. The
condition names the model's partition literally, so Delta reads only that partition's files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ScenarioConfig, ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.modeling import candidates
from shoprec.recommendations import ensure_tables
from shoprec.scoring import embeddings
from shoprec.serving import reasons, rules
from shoprec.serving.lists import (
    SCORED_SCHEMA,
    AsOf,
    check_candidates,
    credited_kinds,
    rerank,
    resolve_model,
    score_view,
    user_candidates,
)

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    run_id: str
    model_version: str
    model_dir: Path
    users: int = 0
    candidates: int = 0
    lists: dict[str, int] = field(default_factory=dict)  # scenario → users given a list by this run
    embedded_items: int = 0
    seconds: float = 0.0
    scoring_seconds: float = 0.0
    ranker_loads: int = 0
    location: str = ""

    @property
    def pairs_per_second(self) -> float:
        return self.candidates / self.scoring_seconds if self.scoring_seconds else 0.0


def _run_id(spark: SparkSession, cfg: ShoprecConfig, version: str, incremental: bool) -> str:
    """The same inputs and settings give the same run id (a re-run is the same run)."""
    tables = ("gold_item_features", "gold_user_profiles", "gold_sequences", "gold_interactions")
    versions = [delta.for_location(spark, cfg.table(t)).history(1).select("version").first() for t in tables]
    text = json.dumps(
        [version, [v[0] if v else None for v in versions], asdict(cfg.scoring), incremental],
        sort_keys=True,
        default=str,
    )
    return f"score-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _serving(spark: SparkSession, cfg: ShoprecConfig, name: str) -> DataFrame:
    return delta.read(spark, cfg.table(name)).where(F.col(S.SPLIT) == S.SERVING)


def _affected_users(
    spark: SparkSession, cfg: ShoprecConfig, changed: DataFrame, items: DataFrame
) -> DataFrame:
    """Users an item change can matter to: it is in their current list, or in their top category."""
    recs = delta.read(spark, cfg.table("recommendations")).where(F.col(S.MODEL) == cfg.scoring.model_name)
    listed = recs.join(changed, S.ITEM_ID, "left_semi").select(S.USER_KEY)
    cats = items.join(changed, S.ITEM_ID, "left_semi").select(S.TOP_CATEGORY).distinct()
    profiles = _serving(spark, cfg, "gold_user_profiles").select(
        S.USER_KEY, F.element_at(F.col(S.TOP_CATEGORIES), 1)["name"].alias(S.TOP_CATEGORY)
    )
    in_cat = profiles.join(cats, S.TOP_CATEGORY, "left_semi").select(S.USER_KEY)
    return listed.unionByName(in_cat).distinct()


def ensure_recommendations(spark: SparkSession, cfg: ShoprecConfig) -> str:
    """The recommendations table, with the ``rules`` column added where an older one lacks it."""
    ensure_tables(spark, cfg)
    return cfg.table("recommendations")


def merge_lists(
    spark: SparkSession,
    cfg: ShoprecConfig,
    lists: Sequence[tuple[ScenarioConfig, DataFrame]],
    version: str,
    run_id: str,
) -> dict[str, int]:
    """Replace each listed user's list of every scenario in ``lists`` atomically, unchanged rows
    kept, in one MERGE: one commit for all scenarios, so a reader never sees one scenario's new
    lists beside another's old ones, and the stream pays one commit per micro-batch, not one per
    scenario. Returns how many users each scenario listed: its rules can leave a user without one.
    """
    if not lists:
        return {}
    location = ensure_recommendations(spark, cfg)
    model = cfg.scoring.model_name
    names = [sc.name for sc, _ in lists]
    tagged = functools.reduce(
        lambda a, b: a.unionByName(b, allowMissingColumns=True),
        [df.withColumn(S.SCENARIO, F.lit(sc.name)) for sc, df in lists],
    ).localCheckpoint()  # re-ranked once: counted here, then merged
    stored = {
        r[0]: r[1]
        for r in delta.read(spark, location)
        .where((F.col(S.MODEL) == model) & F.col(S.SCENARIO).isin(*names))
        .groupBy(S.SCENARIO)
        .agg(F.max(S.RANK))
        .collect()
    }
    # every rank from 1 to the longest list stored: an empty rank deletes what a longer old list had
    ranks = spark.createDataFrame(
        [
            (sc.name, rank)
            for sc, _ in lists
            for rank in range(1, max(sc.k, int(stored.get(sc.name) or 0)) + 1)
        ],
        f"{S.SCENARIO} string, {S.RANK} int",
    )
    users = tagged.select(S.SCENARIO, S.USER_KEY).distinct()
    listed = {name: 0 for name in names}
    listed.update({r[0]: int(r[1]) for r in users.groupBy(S.SCENARIO).count().collect()})
    source = (
        users.join(F.broadcast(ranks), S.SCENARIO)
        .join(tagged, [S.SCENARIO, S.USER_KEY, S.RANK], "left")
        .select(
            S.USER_KEY,
            S.SCENARIO,
            S.RANK,
            S.ITEM_ID,
            S.SCORE,
            S.SOURCE,
            F.lit(model).alias(S.MODEL),
            F.lit(version).alias(S.MODEL_VERSION),
            F.lit(run_id).alias(S.RUN_ID),
            F.current_timestamp().alias(S.GENERATED_AT),
            F.col(rules.RULES).alias(S.RULES),
            F.col(S.REASON)
            if S.REASON in tagged.columns
            else F.lit(None).cast(S.REASON_SCHEMA).alias(S.REASON),
        )
    )
    on = (
        f"t.{S.MODEL} = '{model}' AND t.{S.SCENARIO} = s.{S.SCENARIO} "
        f"AND t.{S.USER_KEY} = s.{S.USER_KEY} AND t.{S.RANK} = s.{S.RANK}"
    )
    changed = " OR ".join(
        f"NOT (t.{c} <=> s.{c})"
        for c in (S.ITEM_ID, S.SCORE, S.SOURCE, S.MODEL_VERSION, S.RUN_ID, S.RULES, S.REASON)
    )
    (
        delta.for_location(spark, location)
        .alias("t")
        .merge(source.alias("s"), on)
        .whenMatchedDelete(f"s.{S.ITEM_ID} IS NULL")
        .whenMatchedUpdateAll(changed)
        .whenNotMatchedInsertAll(f"s.{S.ITEM_ID} IS NOT NULL")
        .execute()
    )
    return listed


def stage(spark: SparkSession, cfg: ShoprecConfig, scored: DataFrame, run_id: str) -> DataFrame:
    """Write ``scored`` to the staging table under ``run_id`` and read it back (computed once)."""
    staging = cfg.table("score_candidates")
    if delta.exists(spark, staging) and delta.read(spark, staging).columns != SCORED_SCHEMA.fieldNames():
        # a work area made by an older shoprec (it held item vectors): start it afresh
        log.info("%s: staging schema changed; recreating it", staging)
        delta.overwrite(spark.createDataFrame([], SCORED_SCHEMA), staging, [S.RUN_ID])
    delta.ensure_table(spark, staging, SCORED_SCHEMA, [S.RUN_ID])
    delta.replace_where(scored.select(*SCORED_SCHEMA.fieldNames()), staging, f"{S.RUN_ID} = '{run_id}'")
    return delta.read(spark, staging).where(F.col(S.RUN_ID) == run_id)


def score(
    spark: SparkSession,
    cfg: ShoprecConfig,
    incremental: bool = False,
    loads: Any = None,
    users: DataFrame | None = None,
    common: candidates.Shared | None = None,
) -> ScoreResult:
    """Score every serving user (with ``incremental``, only those changed items affect; with
    ``users``, a frame of ``user_key``, only those: the stream re-scores a micro-batch's users).
    Either way only changed items are re-embedded. ``common``: the signals every user shares
    (:func:`shoprec.modeling.candidates.shared`), kept by a caller that scores often."""
    started = time.perf_counter()
    model_dir, version = resolve_model(cfg)
    run_id = _run_id(spark, cfg, version, incremental or users is not None)
    result = ScoreResult(run_id, version, model_dir, location=cfg.table("recommendations"))
    refreshed = embeddings.refresh(spark, cfg, str(model_dir), version, incremental or users is not None)
    result.embedded_items = refreshed.embedded
    items = _serving(spark, cfg, "gold_item_features").localCheckpoint()
    profiles = _serving(spark, cfg, "gold_user_profiles")
    sequences = _serving(spark, cfg, "gold_sequences")
    interactions = delta.read(spark, cfg.table("gold_interactions"))
    only: DataFrame | None = users
    if users is None and incremental and refreshed.changed_items is not None:
        ensure_recommendations(spark, cfg)  # read for the users whose lists hold a changed item
        only = _affected_users(spark, cfg, refreshed.changed_items, items)
    view = AsOf(items, profiles, sequences, interactions, embeddings.vectors(spark, cfg, version), only)
    pool = user_candidates(spark, cfg, model_dir, view, common)
    result.users = pool.users.count()
    if result.users == 0:
        if only is not None:
            log.info("no serving user to re-score")
            result.seconds = time.perf_counter() - started
            return result
        raise ShoprecError(f"no serving users in {cfg.table('gold_sequences')}: run `shoprec features` first")
    result.candidates = check_candidates(pool.cands, items)
    t0 = time.perf_counter()
    scored = score_view(spark, cfg, model_dir, view, pool, loads).withColumn(S.RUN_ID, F.lit(run_id))
    if users is None:
        staged = stage(spark, cfg, scored, run_id)
    else:
        # a micro-batch's few users: held by Spark, not staged in Delta (two commits fewer)
        staged = scored.select(*SCORED_SCHEMA.fieldNames()).localCheckpoint()
    result.scoring_seconds = time.perf_counter() - t0
    every = {sc.name: rerank(staged, sc, pool.item_vectors).localCheckpoint() for sc in cfg.scoring.scenarios}
    # the scenarios' lists share most pairs: the ranker's credit is computed once for all of them
    listed = functools.reduce(
        DataFrame.unionByName,
        [lists.select(S.USER_KEY, S.ITEM_ID) for lists in every.values()],
        staged.select(S.USER_KEY, S.ITEM_ID).limit(0),
    )
    credited = credited_kinds(model_dir, view, pool, listed).localCheckpoint()
    explained = [
        (
            sc,
            reasons.explain(
                every[sc.name],
                credited,
                items,
                pool.signals.recent,
                pool.item_vectors,
                pool.signals.pairs,
                pool.signals.linked,
                cfg.scoring.cooc_decay,
            ),
        )
        for sc in cfg.scoring.scenarios
    ]
    result.lists = merge_lists(spark, cfg, explained, version, run_id)
    if users is None:
        # keep only this run's staged candidates (the table is a work area, not a history)
        delta.for_location(spark, cfg.table("score_candidates")).delete(F.col(S.RUN_ID) != run_id)
    if loads is not None:
        result.ranker_loads = int(loads.value)
    result.seconds = time.perf_counter() - started
    log.info(
        "scored %d users, %d candidates (%.0f pairs/s) with %s in %.0fs -> %s",
        result.users,
        result.candidates,
        result.pairs_per_second,
        version,
        result.seconds,
        result.location,
    )
    return result
