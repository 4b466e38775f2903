"""Delta Lake round trip on the real local session: create from schema, MERGE, time travel."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import IntegerType, StringType, StructField, StructType
from pyspark.testing import assertDataFrameEqual

from shoprec import delta
from shoprec.errors import ShoprecError

pytestmark = pytest.mark.spark

SCHEMA = StructType([StructField("item_id", StringType(), False), StructField("stock", IntegerType(), True)])


def test_create_merge_and_time_travel(spark: SparkSession, tmp_path: Path) -> None:
    loc = str(tmp_path / "items")
    delta.ensure_table(spark, loc, SCHEMA)
    delta.ensure_table(spark, loc, SCHEMA)  # a second call finds it and changes nothing
    v1 = spark.createDataFrame([("a", 1), ("b", 2)], SCHEMA)
    v1.write.format("delta").mode("append").save(loc)

    metrics = delta.merge_upsert(
        spark, spark.createDataFrame([("b", 20), ("c", 3)], SCHEMA), loc, ["item_id"]
    )
    assert metrics["numTargetRowsUpdated"] == "1"
    assert metrics["numTargetRowsInserted"] == "1"

    assertDataFrameEqual(
        delta.read(spark, loc), spark.createDataFrame([("a", 1), ("b", 20), ("c", 3)], SCHEMA)
    )
    # version 0 is the empty table created from the schema, 1 the append, 2 the MERGE
    assertDataFrameEqual(delta.read(spark, loc, version=1), v1)
    assert delta.read(spark, loc, version=0).count() == 0


def test_replace_where_replaces_only_the_slice(spark: SparkSession, tmp_path: Path) -> None:
    schema = StructType([StructField("day", StringType(), False), StructField("n", IntegerType(), False)])
    loc = str(tmp_path / "daily")
    delta.ensure_table(spark, loc, schema, partition_by=["day"])
    spark.createDataFrame([("d1", 1), ("d2", 2)], schema).write.format("delta").mode("append").save(loc)
    for _ in range(2):  # running it twice changes nothing
        delta.replace_where(spark.createDataFrame([("d2", 22)], schema), loc, "day = 'd2'")
    assertDataFrameEqual(delta.read(spark, loc), spark.createDataFrame([("d1", 1), ("d2", 22)], schema))


def test_metastore_table_names_work_too(spark: SparkSession) -> None:
    delta.ensure_table(spark, "default.shoprec_named", SCHEMA)
    delta.merge_upsert(spark, spark.createDataFrame([("x", 5)], SCHEMA), "default.shoprec_named", ["item_id"])
    assert delta.exists(spark, "default.shoprec_named")
    assertDataFrameEqual(
        delta.read(spark, "default.shoprec_named"), spark.createDataFrame([("x", 5)], SCHEMA)
    )


def test_a_missing_not_null_column_names_the_table_and_the_fix(spark: SparkSession, tmp_path: Path) -> None:
    loc = str(tmp_path / "old")
    delta.ensure_table(spark, loc, StructType([SCHEMA.fields[0]]))
    assert delta.add_missing_columns(spark, loc, SCHEMA) == ["stock"]  # nullable: added
    wider = StructType([*SCHEMA.fields, StructField("shelf", StringType(), False)])
    with pytest.raises(ShoprecError, match=rf"^{loc}: .*NOT NULL column shelf.*delete the table and re-run"):
        delta.add_missing_columns(spark, loc, wider)


def test_a_table_from_an_older_shoprec_gains_the_new_nullable_columns(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Columns a release adds (the catalog's links) reach tables an older one made: without them a
    MERGE drops the new values silently and an overwrite of a slice refuses the wider rows."""
    loc = str(tmp_path / "older")
    delta.ensure_table(spark, loc, StructType([SCHEMA.fields[0]]))
    spark.createDataFrame([("x",)], StructType([SCHEMA.fields[0]])).write.format("delta").mode("append").save(
        loc
    )
    delta.ensure_table(spark, loc, SCHEMA)
    delta.replace_where(spark.createDataFrame([("x", 3)], SCHEMA), loc, "item_id = 'x'")
    assertDataFrameEqual(delta.read(spark, loc), spark.createDataFrame([("x", 3)], SCHEMA))
