"""Dense indexes without a single-task window, and the plan check that finds such windows."""

from __future__ import annotations

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.evaluation import metrics as M
from shoprec.indexes import dense_index, last_execution, single_partition_windows
from shoprec.modeling.als import fit_als
from shoprec.modeling.candidates import popular_for


def test_a_dense_index_numbers_keys_in_order_from_zero_whatever_the_partitioning(spark: SparkSession) -> None:
    rows = [(f"k{(i * 37) % 101:03d}",) for i in range(300)] + [(None,)]
    frame = spark.createDataFrame(rows, "k string")
    mark = last_execution(spark)
    first = {r["k"]: r["i"] for r in dense_index(frame.repartition(5), "k", "i").collect()}
    again = {r["k"]: r["i"] for r in dense_index(frame.coalesce(1), "k", "i").collect()}
    assert first == again, "the same keys get the same numbers on every run and partitioning"
    assert sorted(first.values()) == list(range(101)), "dense from 0, nulls left out"
    assert [k for k, _ in sorted(first.items(), key=lambda kv: kv[1])] == sorted(first), "in key order"
    assert single_partition_windows(spark, mark) == []
    # the check is not blind: the window the index replaces is found
    mark = last_execution(spark)
    frame.select("k").distinct().withColumn("i", F.dense_rank().over(Window.orderBy("k"))).agg(
        F.max("i")
    ).first()
    found = single_partition_windows(spark, mark)
    assert len(found) == 1 and "dense_rank" in found[0]
    mark = last_execution(spark)
    frame.withColumn(
        "r", F.row_number().over(Window.partitionBy(F.coalesce("k", F.lit(""))).orderBy(F.desc("k")))
    ).agg(F.max("r")).first()
    assert single_partition_windows(spark, mark) == [], "a partitioned window is not reported"


def test_als_candidates_and_exposure_run_no_window_as_one_task(
    spark: SparkSession, small_shop: ShoprecConfig
) -> None:
    """What used a global window (ALS's user and item numbers, the overall popular list, the
    exposure Gini) on the small generated shop: every query they run, read from Spark's plans."""
    interactions = delta.read(spark, small_shop.table("gold_interactions"))
    items = delta.read(spark, small_shop.table("gold_item_features")).where(F.col(S.SPLIT) == S.TRAIN)
    profiles = delta.read(spark, small_shop.table("gold_user_profiles")).where(F.col(S.SPLIT) == S.TRAIN)
    mark = last_execution(spark)
    users, vectors = fit_als(spark, small_shop, interactions)
    assert users.count() == interactions.select(S.USER_KEY).distinct().count()
    assert vectors.count() == interactions.select(S.ITEM_ID).distinct().count()
    lists = popular_for(interactions.select(S.USER_KEY).distinct(), items, profiles, 5)
    ranks = lists.groupBy(S.USER_KEY).agg(F.sort_array(F.collect_list(S.RANK)).alias("r"))
    assert {tuple(r["r"]) for r in ranks.collect()} <= {
        (1, 2, 3, 4, 5),
        (1, 2, 3, 4),
        (1, 2, 3),
        (1, 2),
        (1,),
    }
    assert M.exposure_gini(lists, items, 5) is not None
    assert single_partition_windows(spark, mark) == []
