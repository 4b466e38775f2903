"""Item embeddings per model version, in Delta, refreshed incrementally from the item table's
Change Data Feed.

``gold_item_features`` has Change Data Feed on. The embeddings table remembers, per model version,
the item table version it has seen (a table property). ``refresh(incremental=True)`` reads the
changes since then, keeps serving rows whose text changed (by hash: a rewrite of an unchanged row
costs nothing), re-embeds only those and MERGEs them; deleted items are removed. Without an
earlier refresh for this model version (or with ``incremental=False``) every serving item is
embedded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType, TimestampType

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig

log = logging.getLogger(__name__)

TEXT_HASH, VECTOR, EMBEDDED_AT = "text_hash", "vector", "embedded_at"
ITEM_EMBEDDINGS_SCHEMA = StructType(
    [
        StructField(S.MODEL_VERSION, StringType(), False),
        StructField(S.ITEM_ID, StringType(), False),
        StructField(TEXT_HASH, StringType(), False),
        StructField(VECTOR, ArrayType(FloatType(), False), False),
        StructField(EMBEDDED_AT, TimestampType(), False),
    ]
)


@dataclass(frozen=True)
class Refresh:
    """What a refresh did: items embedded, removed, and the ids it touched."""

    embedded: int
    removed: int
    changed_items: DataFrame | None  # (item_id) touched by an incremental refresh; None after a full one
    source_version: int


def _property(version: str) -> str:
    """The table property holding the items version ``version``'s vectors are up to date with.
    It names how vectors are computed (:data:`shoprec.modeling.encoder.VECTORS`): vectors an older
    shoprec computed otherwise are all embedded again, never mixed with new ones."""
    from shoprec.modeling.encoder import VECTORS

    return f"shoprec.embeddings.{version}.v{VECTORS}.items_version"


def _serving(items: DataFrame) -> DataFrame:
    return items.where(F.col(S.SPLIT) == S.SERVING).select(
        S.ITEM_ID, S.ITEM_TEXT, F.sha2(S.ITEM_TEXT, 256).alias(TEXT_HASH)
    )


def refresh(
    spark: SparkSession, cfg: ShoprecConfig, model_dir: str, version: str, incremental: bool = True
) -> Refresh:
    """Bring the embeddings of ``version`` up to date with the serving items."""
    from shoprec.modeling import encoder

    location = cfg.table("item_embeddings")
    delta.ensure_table(spark, location, ITEM_EMBEDDINGS_SCHEMA, [S.MODEL_VERSION])
    items_location = cfg.table("gold_item_features")
    current = delta.for_location(spark, items_location).history(1).select("version").first()
    items_version = int(current[0]) if current else 0
    seen_text = delta.properties(spark, location).get(_property(version))
    existing = delta.read(spark, location).where(F.col(S.MODEL_VERSION) == version)
    serving = _serving(delta.read(spark, items_location, items_version))
    full = not (incremental and seen_text is not None)
    if not full:
        seen = int(str(seen_text))
        if seen >= items_version:
            log.info("item embeddings of %s are up to date (items version %d)", version, seen)
            return Refresh(0, 0, spark.createDataFrame([], f"{S.ITEM_ID} string"), seen)
        touched = (
            spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", seen + 1)
            .option("endingVersion", items_version)
            .load(items_location)
            .where(F.col(S.SPLIT) == S.SERVING)
            .select(S.ITEM_ID)
            .distinct()
        )
        # a rewritten but unchanged row has the same text hash: nothing to do for it
        todo = serving.join(touched, S.ITEM_ID, "left_semi").join(
            existing.select(S.ITEM_ID, TEXT_HASH), [S.ITEM_ID, TEXT_HASH], "left_anti"
        )
    else:
        todo = serving
    # materialised before the table they were read from is written
    todo = todo.localCheckpoint()
    gone = (
        existing.select(S.ITEM_ID).join(serving.select(S.ITEM_ID), S.ITEM_ID, "left_anti").localCheckpoint()
    )
    vectors = encoder.embed(todo, S.ITEM_ID, S.ITEM_TEXT, cfg.evaluation.encoder, "item", model_dir)
    rows = (
        vectors.join(todo.select(S.ITEM_ID, TEXT_HASH), S.ITEM_ID)
        .select(
            F.lit(version).alias(S.MODEL_VERSION),
            S.ITEM_ID,
            TEXT_HASH,
            VECTOR,
            F.current_timestamp().alias(EMBEDDED_AT),
        )
        .localCheckpoint()
    )
    embedded, removed = rows.count(), gone.count()
    cond = f"t.{S.MODEL_VERSION} = '{version}' AND t.{S.ITEM_ID} = s.{S.ITEM_ID}"
    target = delta.for_location(spark, location)
    target.alias("t").merge(rows.alias("s"), cond).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    if removed:
        target.alias("t").merge(gone.alias("s"), cond).whenMatchedDelete().execute()
    delta.set_property(spark, location, _property(version), str(items_version))
    changed_ids = None if full else todo.select(S.ITEM_ID).unionByName(gone).distinct()
    log.info(
        "item embeddings of %s: %d embedded, %d removed (%s) -> %s",
        version,
        embedded,
        removed,
        "full" if full else "incremental",
        location,
    )
    return Refresh(embedded, removed, changed_ids, items_version)


def vectors(spark: SparkSession, cfg: ShoprecConfig, version: str) -> DataFrame:
    """``(item_id, vector)`` of ``version``."""
    return (
        delta.read(spark, cfg.table("item_embeddings"))
        .where(F.col(S.MODEL_VERSION) == version)
        .select(S.ITEM_ID, VECTOR)
    )
