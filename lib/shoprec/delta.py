"""Reading and writing Delta tables by configured location: a path, or a metastore table name.

Tables are created from their schema (code) before the first write, and writes never replace a
whole table blindly: callers either MERGE on a key or replace one slice with ``replaceWhere``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from shoprec.config import is_table_path
from shoprec.errors import ShoprecError

log = logging.getLogger(__name__)


def for_location(spark: SparkSession, location: str) -> DeltaTable:
    """The Delta table at ``location`` (path or name)."""
    if is_table_path(location):
        return DeltaTable.forPath(spark, location)
    return DeltaTable.forName(spark, location)


def exists(spark: SparkSession, location: str) -> bool:
    if is_table_path(location):
        return DeltaTable.isDeltaTable(spark, location)
    return bool(spark.catalog.tableExists(location))


def sql_name(location: str) -> str:
    """How SQL statements name the table: ``delta.`path``` or the metastore name."""
    return f"delta.`{location}`" if is_table_path(location) else location


def ensure_table(
    spark: SparkSession,
    location: str,
    schema: StructType,
    partition_by: Sequence[str] = (),
    checks: Mapping[str, str] | None = None,
    properties: Mapping[str, str] | None = None,
) -> DeltaTable:
    """Create the table from ``schema`` if it does not exist yet (NOT NULL from the schema), add
    the nullable columns a table made by an older shoprec lacks (a MERGE would drop them silently,
    an overwrite would refuse them), any missing CHECK constraints and table properties, and
    return it."""
    builder = DeltaTable.createIfNotExists(spark)
    builder = builder.location(location) if is_table_path(location) else builder.tableName(location)
    builder = builder.addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    for key, value in (properties or {}).items():
        builder = builder.property(key, value)
    table = builder.execute()
    add_missing_columns(spark, location, schema)
    if checks:
        detail = table.detail().select("properties").first()
        existing = set((detail[0] if detail else None) or {})
        for name, expr in checks.items():
            if f"delta.constraints.{name.lower()}" not in existing:
                spark.sql(f"ALTER TABLE {sql_name(location)} ADD CONSTRAINT {name} CHECK ({expr})")
    return table


def properties(spark: SparkSession, location: str) -> dict[str, str]:
    """The table's properties (where shoprec keeps what a table was built from)."""
    row = for_location(spark, location).detail().select("properties").first()
    return dict(row[0]) if row and row[0] else {}


def set_property(spark: SparkSession, location: str, key: str, value: str) -> None:
    """Set one table property: a metadata-only commit."""
    spark.sql(f"ALTER TABLE {sql_name(location)} SET TBLPROPERTIES ('{key}' = '{value}')")


def add_missing_columns(spark: SparkSession, location: str, schema: StructType) -> list[str]:
    """Add ``schema``'s nullable columns the table lacks (a table made by an older shoprec). A
    missing NOT NULL column cannot be added to rows already there, so the user must start it over."""
    have = set(read(spark, location).columns)
    missing = [f for f in schema.fields if f.name not in have]
    for f in missing:
        if not f.nullable:
            raise ShoprecError(
                f"{location}: the table lacks NOT NULL column {f.name}, which cannot be added to an existing "
                "table (it was made by an older shoprec); point its entry under tables: elsewhere, or delete "
                "the table and re-run the stage that writes it"
            )
        spark.sql(f"ALTER TABLE {sql_name(location)} ADD COLUMNS (`{f.name}` {f.dataType.simpleString()})")
    return [f.name for f in missing]


def read(spark: SparkSession, location: str, version: int | None = None) -> DataFrame:
    """Read a table, optionally as of an older ``version`` (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(location) if is_table_path(location) else reader.table(location)


def replace_where(df: DataFrame, location: str, condition: str) -> None:
    """Atomically replace the rows matching ``condition`` (a partition slice) with ``df``."""
    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", condition)
    if is_table_path(location):
        writer.save(location)
    else:
        writer.saveAsTable(location)


def overwrite(df: DataFrame, location: str, new_schema: Sequence[str] | None = None) -> None:
    """Atomically replace the whole table's contents with ``df`` (schema kept). With
    ``new_schema`` (the partition columns), the table takes ``df``'s schema instead: for derived
    tables whose shape changed between versions of shoprec."""
    writer = df.write.format("delta").mode("overwrite")
    if new_schema is not None:
        writer = writer.option("overwriteSchema", "true").partitionBy(*new_schema)
    if is_table_path(location):
        writer.save(location)
    else:
        writer.saveAsTable(location)


def merge_upsert(spark: SparkSession, df: DataFrame, location: str, keys: Sequence[str]) -> dict[str, str]:
    """MERGE ``df`` into the table on ``keys``: update matches, insert the rest. Returns the metrics."""
    target = for_location(spark, location)
    condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    target.alias("t").merge(
        df.alias("s"), condition
    ).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    metrics = last_operation_metrics(spark, location)
    log.info("MERGE into %s on %s: %s", location, ", ".join(keys), metrics)
    return metrics


def last_operation_metrics(spark: SparkSession, location: str) -> dict[str, str]:
    """The row counts of the table's last operation (``numTargetRowsInserted``...)."""
    row = for_location(spark, location).history(1).select("operationMetrics").first()
    metrics = dict(row[0]) if row and row[0] else {}
    return {k: v for k, v in sorted(metrics.items()) if "Rows" in k and v != "0"}
