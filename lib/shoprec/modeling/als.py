"""Implicit-feedback ALS (Spark ML): a baseline, a candidate source and a ranking feature."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.indexes import dense_index
from shoprec.modeling.retrieval import VECTOR


def fit_als(spark: SparkSession, cfg: ShoprecConfig, interactions: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Implicit-feedback ALS on ``interactions``: ``(user_key, vector)`` and ``(item_id, vector)``.
    Ids become dense integers in key order (:func:`dense_index`: no single-task window), not by
    a fitted indexer model."""
    from pyspark.ml.recommendation import ALS

    a = cfg.evaluation.als
    ratings = interactions.groupBy(S.USER_KEY, S.ITEM_ID).agg(F.sum(S.WEIGHT).cast("float").alias("_w"))
    # ALS's ids are ints
    user_ids = dense_index(ratings, S.USER_KEY, "_u").withColumn("_u", F.col("_u").cast("int"))
    item_ids = dense_index(ratings, S.ITEM_ID, "_i").withColumn("_i", F.col("_i").cast("int"))
    train = ratings.join(user_ids, S.USER_KEY).join(item_ids, S.ITEM_ID)
    model = ALS(
        rank=a.rank,
        regParam=a.reg_param,
        alpha=a.alpha,
        maxIter=a.max_iter,
        implicitPrefs=True,
        userCol="_u",
        itemCol="_i",
        ratingCol="_w",
        seed=a.seed,
        coldStartStrategy="drop",
    ).fit(train)
    users = model.userFactors.join(user_ids, F.col("id") == F.col("_u")).select(
        S.USER_KEY, F.col("features").alias(VECTOR)
    )
    items = model.itemFactors.join(item_ids, F.col("id") == F.col("_i")).select(
        S.ITEM_ID, F.col("features").alias(VECTOR)
    )
    return users, items
