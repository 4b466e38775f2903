"""``shoprec features``: silver → gold tables, each written idempotently.

Interactions are merged on their event id; every other gold table is rebuilt per split and written
with ``replaceWhere`` on its ``split`` partition, so a re-run leaves each table as it was.
"""

from __future__ import annotations

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
}


@dataclass(frozen=True)
class GoldResult:
    rows: dict[str, int]
    valid_start: datetime | None
    test_start: datetime | None
    seconds: float


def _ensure(spark: SparkSession, cfg: ShoprecConfig) -> None:
    for name, (schema, parts) in GOLD_TABLES.items():
        props = {"delta.enableChangeDataFeed": "true"} if name == "gold_item_features" else None
        delta.ensure_table(spark, cfg.table(name), schema, parts, properties=props)


def _replace_split(df: DataFrame, location: str, splits: list[str]) -> None:
    quoted = ", ".join(f"'{s}'" for s in splits)
    delta.replace_where(df.coalesce(4), location, f"{S.SPLIT} IN ({quoted})")


def build_gold(spark: SparkSession, cfg: ShoprecConfig) -> GoldResult:
    """Rebuild the gold tables from silver."""
    started = time.perf_counter()
    f = cfg.features
    _ensure(spark, cfg)
    events = delta.read(spark, cfg.table("silver_events"))
    catalog = delta.read(spark, cfg.table("silver_catalog"))
    last = events.agg(F.max(S.EVENT_TIME)).first()
    if last is None or last[0] is None:
        raise ShoprecError(
            f"{cfg.table('silver_events')} is empty: run `shoprec ingest` and `shoprec clean` first"
        )
    cuts = gold.time_cuts(f, last[0])
    periods = gold.with_periods(events, f, cuts).persist(StorageLevel.MEMORY_AND_DISK)

    inter = gold.interactions(events, f)
    target = delta.for_location(spark, cfg.table("gold_interactions"))
    target.alias("t").merge(
        inter.alias("s"), f"t.{S.EVENT_DATE} = s.{S.EVENT_DATE} AND t.{S.EVENT_ID} = s.{S.EVENT_ID}"
    ).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()

    serving_as_of = last[0] + timedelta(microseconds=1)
    for split in S.SPLITS:
        seen = gold.visible(periods, split)
        if f.split.mode == "time":
            assert cuts.valid_start and cuts.test_start
            as_of = {S.TRAIN: cuts.valid_start, S.VALID: cuts.valid_start, S.TEST: cuts.test_start}.get(
                split, serving_as_of
            )
        else:
            row = seen.agg(F.max(S.EVENT_TIME)).first()
            as_of = (row[0] if row and row[0] else last[0]) + timedelta(microseconds=1)
        items = gold.item_features(catalog, seen, f, split, as_of)
        _replace_split(items, cfg.table("gold_item_features"), [split])
        items = delta.read(spark, cfg.table("gold_item_features")).where(F.col(S.SPLIT) == split)
        _replace_split(
            gold.user_profiles(seen, items, f, split, as_of), cfg.table("gold_user_profiles"), [split]
        )
        _replace_split(gold.sequences(seen, f, split), cfg.table("gold_sequences"), [split])
    examples = gold.training_examples(periods, catalog, f)
    _replace_split(examples, cfg.table("gold_training_examples"), [S.TRAIN, S.VALID, S.TEST])
    periods.unpersist()
    rows = {name: delta.read(spark, cfg.table(name)).count() for name in GOLD_TABLES}
    result = GoldResult(rows, cuts.valid_start, cuts.test_start, time.perf_counter() - started)
    log.info(
        "gold tables built in %.1fs (split %s, cuts %s / %s): %s",
        result.seconds,
        f.split.mode,
        cuts.valid_start,
        cuts.test_start,
        rows,
    )
    return result
