"""Raw exports → bronze Delta tables: rows as read, with their source file and batch.

Readers pass the raw contract's schema explicitly and keep the text of any record that does not
parse in ``_corrupt_record``, so nothing is dropped on the way in. Events are written per export
day with ``replaceWhere``, so loading the same files again changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig

log = logging.getLogger(__name__)


def read_raw(spark: SparkSession, path: str, schema: StructType, fmt: str) -> DataFrame:
    """Read raw files with ``schema``; unparseable records land in ``_corrupt_record``, not nowhere."""
    if fmt == "parquet":
        df = spark.read.schema(schema).parquet(path).withColumn(S.CORRUPT_RECORD, F.lit(None).cast("string"))
    else:
        reader = (
            spark.read.schema(S.with_corrupt_record(schema))
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", S.CORRUPT_RECORD)
        )
        if fmt == "json":
            df = reader.json(path)
        else:
            df = reader.option("header", True).option("escape", '"').csv(path)
    cols = [F.col(f.name) for f in schema.fields] + [F.col(S.CORRUPT_RECORD)]
    if S.EVENT_DATE in df.columns:  # the export folder's partition value (event_date=YYYY-MM-DD)
        cols.append(F.col(S.EVENT_DATE).cast("date").alias(S.EVENT_DATE))
    return df.select(*cols, F.col("_metadata.file_path").alias(S.SOURCE_FILE))


def with_batch(df: DataFrame, batch_id: str) -> DataFrame:
    return df.withColumn(S.INGEST_BATCH, F.lit(batch_id)).withColumn(S.INGEST_TIME, F.current_timestamp())


@dataclass(frozen=True)
class BronzeResult:
    batch_id: str
    events_location: str
    catalog_location: str


def load_bronze(spark: SparkSession, cfg: ShoprecConfig, batch_id: str | None = None) -> BronzeResult:
    """Load every raw export under ``paths.raw`` into the bronze tables."""
    batch_id = batch_id or uuid.uuid4().hex[:12]
    raw, fmt = cfg.path("raw"), cfg.generator.format
    events_loc, catalog_loc = cfg.table("bronze_events"), cfg.table("bronze_catalog")

    events = with_batch(read_raw(spark, f"{raw}/events", S.RAW_EVENT_SCHEMA, fmt), batch_id)
    events = events.select([f.name for f in S.BRONZE_EVENT_SCHEMA.fields])
    delta.ensure_table(spark, events_loc, S.BRONZE_EVENT_SCHEMA, partition_by=[S.EVENT_DATE])
    dates = sorted(r[0].isoformat() for r in events.select(S.EVENT_DATE).distinct().collect())
    if dates:
        cond = f"{S.EVENT_DATE} IN ({', '.join(repr(d) for d in dates)})"
        delta.replace_where(events, events_loc, cond)
    log.info("bronze events: %d export days replaced in %s", len(dates), events_loc)

    catalog = with_batch(read_raw(spark, f"{raw}/catalog", S.RAW_CATALOG_SCHEMA, fmt), batch_id)
    catalog = catalog.select([f.name for f in S.BRONZE_CATALOG_SCHEMA.fields])
    delta.ensure_table(spark, catalog_loc, S.BRONZE_CATALOG_SCHEMA)
    delta.replace_where(catalog, catalog_loc, "true")  # the catalog export is a full snapshot
    log.info("bronze catalog: snapshot replaced in %s", catalog_loc)
    return BronzeResult(batch_id, events_loc, catalog_loc)
