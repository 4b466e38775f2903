"""``shoprec features``: silver → gold tables, each written idempotently.

Interactions are merged on their event id; every other gold table is rebuilt per split and written
with ``replaceWhere`` on its ``split`` partition, so a re-run leaves each table as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.features import gold

log = logging.getLogger(__name__)

GOLD_TABLES: dict[str, tuple[StructType, list[str]]] = {
    "gold_interactions": (S.GOLD_INTERACTION_SCHEMA, [S.EVENT_DATE]),
    "gold_item_features": (S.GOLD_ITEM_FEATURES_SCHEMA, [S.SPLIT]),
    "gold_user_profiles": (S.GOLD_USER_PROFILE_SCHEMA, [S.SPLIT]),
    "gold_sequences": (S.GOLD_SEQUENCE_SCHEMA, [S.SPLIT]),
    "gold_training_examples": (S.GOLD_TRAINING_SCHEMA, [S.SPLIT]),
    "gold_user_state": (S.GOLD_USER_STATE_SCHEMA, []),
}


@dataclass(frozen=True)
class GoldResult:
    rows: dict[str, int]
    valid_start: datetime | None
    test_start: datetime | None
    seconds: float
    mode: str  # "full", "incremental" or "up to date"
    new_batches: int


FINGERPRINT = "shoprec.features.fingerprint"
#: Set on ``gold_user_state`` by the stream's fold (:func:`fold_batch`), which leaves the serving
#: item features and other users' profiles as they were: the next daily run refreshes them even
#: when every silver batch is already folded in.
SERVING_STALE = "shoprec.features.serving_stale"


def _fingerprint(cfg: ShoprecConfig) -> str:
    """A hash of the features configuration: a change to it means the stored state is stale."""
    text = json.dumps(dataclasses.asdict(cfg.features), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_gold(spark: SparkSession, cfg: ShoprecConfig) -> None:
    """Every gold table, created empty where it does not exist yet."""
    for name, (schema, parts) in GOLD_TABLES.items():
        props = {"delta.enableChangeDataFeed": "true"} if name == "gold_item_features" else None
        delta.ensure_table(spark, cfg.table(name), schema, parts, properties=props)


def _replace_split(df: DataFrame, location: str, splits: list[str]) -> None:
    quoted = ", ".join(f"'{s}'" for s in splits)
    delta.replace_where(df.coalesce(4), location, f"{S.SPLIT} IN ({quoted})")


def _merge_interactions(spark: SparkSession, cfg: ShoprecConfig, events: DataFrame) -> None:
    target = delta.for_location(spark, cfg.table("gold_interactions"))
    target.alias("t").merge(
        gold.interactions(events, cfg.features).alias("s"),
        f"t.{S.EVENT_DATE} = s.{S.EVENT_DATE} AND t.{S.EVENT_ID} = s.{S.EVENT_ID}",
    ).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()


def _serving_items(spark: SparkSession, cfg: ShoprecConfig, events: DataFrame, as_of: datetime) -> DataFrame:
    catalog = delta.read(spark, cfg.table("silver_catalog"))
    items = gold.item_features(catalog, events, cfg.features, S.SERVING, as_of)
    _replace_split(items, cfg.table("gold_item_features"), [S.SERVING])
    return delta.read(spark, cfg.table("gold_item_features")).where(F.col(S.SPLIT) == S.SERVING)


def build_gold(spark: SparkSession, cfg: ShoprecConfig, full: bool = False) -> GoldResult:
    """Bring the gold tables up to date with silver.

    The first run (or ``full``) builds every split from all of silver. Later runs are incremental:
    only silver batches not yet folded into ``gold_user_state`` are read; interactions are merged,
    serving sequences extended and serving profiles re-rendered from the merged state, while the
    train/valid/test snapshots stay as they are until the next full build (schedule it with
    training). The state table is written last, so a run killed half-way is simply repeated.
    Where the stream already folded every batch in, the serving item features and profiles it
    left as they were are refreshed (mode ``serving refreshed``).
    """
    started = time.perf_counter()
    ensure_gold(spark, cfg)
    events = delta.read(spark, cfg.table("silver_events"))
    state = delta.read(spark, cfg.table("gold_user_state"))
    silver_batches = {r[0] for r in events.select(S.INGEST_BATCH).distinct().collect()}
    if not silver_batches:
        raise ShoprecError(
            f"{cfg.table('silver_events')} is empty: run `shoprec ingest` and `shoprec clean` first"
        )
    folded = {r[0] for r in state.select(F.explode(S.BATCHES)).distinct().collect()}
    new = sorted(silver_batches - folded)
    cuts = gold.Cuts(None, None)
    fingerprint = _fingerprint(cfg)
    props = delta.properties(spark, cfg.table("gold_user_state"))
    built_with, stale = props.get(FINGERPRINT), props.get(SERVING_STALE) == "true"
    if folded and not full and built_with != fingerprint:
        log.info("features configuration changed since the last full build: rebuilding every split")
    if full or not folded or built_with != fingerprint:
        mode = "full"
        cuts = _build_full(spark, cfg, events)
        delta.set_property(spark, cfg.table("gold_user_state"), FINGERPRINT, fingerprint)
    elif new:
        mode = "incremental"
        _build_incremental(spark, cfg, events.where(F.col(S.INGEST_BATCH).isin(*new)), state)
    elif stale:
        mode = "serving refreshed"
        _refresh_serving(spark, cfg, state)
    else:
        mode = "up to date"
    if stale and mode != "up to date":
        delta.set_property(spark, cfg.table("gold_user_state"), SERVING_STALE, "false")
    rows = {name: delta.read(spark, cfg.table(name)).count() for name in GOLD_TABLES}
    result = GoldResult(
        rows, cuts.valid_start, cuts.test_start, time.perf_counter() - started, mode, len(new)
    )
    log.info("gold tables (%s, %d new silver batches) in %.1fs: %s", mode, len(new), result.seconds, rows)
    return result


def _build_full(spark: SparkSession, cfg: ShoprecConfig, events: DataFrame) -> gold.Cuts:
    f = cfg.features
    catalog = delta.read(spark, cfg.table("silver_catalog"))
    last = events.agg(F.max(S.EVENT_TIME)).first()
    assert last is not None and last[0] is not None
    cuts = gold.time_cuts(f, last[0])
    log.info("full gold build: split %s, cuts %s / %s", f.split.mode, cuts.valid_start, cuts.test_start)
    periods = gold.with_periods(events, f, cuts).persist(StorageLevel.MEMORY_AND_DISK)
    _merge_interactions(spark, cfg, events)
    for split in (S.TRAIN, S.VALID, S.TEST):
        seen = gold.visible(periods, split)
        if f.split.mode == "time":
            assert cuts.valid_start and cuts.test_start
            as_of = cuts.test_start if split == S.TEST else cuts.valid_start
        else:
            row = seen.agg(F.max(S.EVENT_TIME)).first()
            as_of = (row[0] if row and row[0] else last[0]) + timedelta(microseconds=1)
        items = gold.item_features(catalog, seen, f, split, as_of)
        _replace_split(items, cfg.table("gold_item_features"), [split])
        items = delta.read(spark, cfg.table("gold_item_features")).where(F.col(S.SPLIT) == split)
        profiles = gold.user_profiles(gold.user_state(seen, items, f), f, split, as_of)
        _replace_split(profiles, cfg.table("gold_user_profiles"), [split])
        _replace_split(gold.sequences(seen, f, split), cfg.table("gold_sequences"), [split])
    examples = gold.training_examples(periods, catalog, f)
    _replace_split(examples, cfg.table("gold_training_examples"), [S.TRAIN, S.VALID, S.TEST])
    periods.unpersist()

    as_of = last[0] + timedelta(microseconds=1)
    items = _serving_items(spark, cfg, events, as_of)
    _replace_split(gold.sequences(events, f, S.SERVING), cfg.table("gold_sequences"), [S.SERVING])
    state = gold.user_state(events, items, f).localCheckpoint()
    _replace_split(
        gold.user_profiles(state, f, S.SERVING, as_of), cfg.table("gold_user_profiles"), [S.SERVING]
    )
    delta.overwrite(state.coalesce(4), cfg.table("gold_user_state"))
    return cuts


def _refresh_serving(spark: SparkSession, cfg: ShoprecConfig, state: DataFrame) -> None:
    """The serving item features and every user's profile as of the newest folded event, from the
    stored state: what the stream's micro-batches leave to the daily run."""
    last = state.agg(F.max(S.LAST_EVENT_TIME)).first()
    assert last is not None and last[0] is not None
    as_of = last[0] + timedelta(microseconds=1)
    _serving_items(spark, cfg, delta.read(spark, cfg.table("silver_events")), as_of)
    profiles = gold.user_profiles(state, cfg.features, S.SERVING, as_of)
    _replace_split(profiles, cfg.table("gold_user_profiles"), [S.SERVING])


def fold_batch(spark: SparkSession, cfg: ShoprecConfig, batch: str, ensured: bool = False) -> GoldResult:
    """The stream's gold step: one silver batch folded into the serving state of its own users.

    :func:`build_gold`'s incremental fold, less what a micro-batch of a few users cannot afford and
    does not need: the serving item features (catalog-wide aggregates over all of silver) stay as
    the last daily ``features`` run left them, and only the batch's users' profiles are rewritten
    (a MERGE), not every user's; no table is counted. Falls back to :func:`build_gold` where there
    is no state to fold into yet or the features configuration changed since the last full build.
    ``ensured``: the caller made sure the gold tables exist (the stream, once per query: seven
    table checks cost a micro-batch about three seconds on 2 cores).
    """
    started = time.perf_counter()
    if not ensured:
        ensure_gold(spark, cfg)
    state = delta.read(spark, cfg.table("gold_user_state"))
    props = delta.properties(spark, cfg.table("gold_user_state"))
    if props.get(FINGERPRINT) != _fingerprint(cfg) or state.limit(1).count() == 0:
        return build_gold(spark, cfg)
    if state.where(F.array_contains(S.BATCHES, batch)).limit(1).count():
        return GoldResult({}, None, None, time.perf_counter() - started, "up to date", 0)
    if props.get(SERVING_STALE) != "true":
        # before the fold: a run killed after it still leaves the daily run its refresh to do
        delta.set_property(spark, cfg.table("gold_user_state"), SERVING_STALE, "true")
    new = delta.read(spark, cfg.table("silver_events")).where(F.col(S.INGEST_BATCH) == batch)
    _build_incremental(spark, cfg, new, state, everyone=False)
    result = GoldResult({}, None, None, time.perf_counter() - started, "incremental", 1)
    log.info("gold: batch %s folded into its users' serving state in %.1fs", batch, result.seconds)
    return result


def _build_incremental(
    spark: SparkSession, cfg: ShoprecConfig, new_events: DataFrame, state: DataFrame, everyone: bool = True
) -> None:
    """Fold ``new_events`` in. ``everyone``: also refresh the serving item features and every
    user's profile (its recency is relative to the new ``as_of``); else only the new events'
    users' profiles, against the stored item features."""
    f = cfg.features
    new_events = new_events.persist(StorageLevel.MEMORY_AND_DISK)
    _merge_interactions(spark, cfg, new_events)
    last = state.agg(F.max(S.LAST_EVENT_TIME)).first()
    new_last = new_events.agg(F.max(S.EVENT_TIME)).first()
    stamps = [r[0] for r in (last, new_last) if r is not None and r[0] is not None]
    as_of = max(stamps) + timedelta(microseconds=1)
    if everyone:
        events = delta.read(spark, cfg.table("silver_events"))
        items = _serving_items(spark, cfg, events, as_of)
    else:
        items = delta.read(spark, cfg.table("gold_item_features")).where(F.col(S.SPLIT) == S.SERVING)

    sequences = delta.read(spark, cfg.table("gold_sequences")).where(F.col(S.SPLIT) == S.SERVING)
    extended = gold.extend_sequences(sequences, new_events, f, S.SERVING)
    target = delta.for_location(spark, cfg.table("gold_sequences"))
    target.alias("t").merge(
        extended.alias("s"), f"t.{S.SPLIT} = '{S.SERVING}' AND t.{S.USER_KEY} = s.{S.USER_KEY}"
    ).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()

    affected = new_events.select(S.USER_KEY).distinct()
    merged = gold.merge_user_state(
        state.join(affected, S.USER_KEY, "left_semi"), gold.user_state(new_events, items, f)
    ).localCheckpoint()
    if everyone:
        rest = state.join(affected, S.USER_KEY, "left_anti").unionByName(merged)
        _replace_split(
            gold.user_profiles(rest, f, S.SERVING, as_of), cfg.table("gold_user_profiles"), [S.SERVING]
        )
    else:
        profiles = delta.for_location(spark, cfg.table("gold_user_profiles"))
        profiles.alias("t").merge(
            gold.user_profiles(merged, f, S.SERVING, as_of).alias("s"),
            f"t.{S.SPLIT} = '{S.SERVING}' AND t.{S.USER_KEY} = s.{S.USER_KEY}",
        ).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    delta.merge_upsert(spark, merged, cfg.table("gold_user_state"), [S.USER_KEY])
    new_events.unpersist()
