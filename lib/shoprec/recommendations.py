"""The recommendations contract: one table every producer writes (batch scoring, evaluation, the
baselines) and every consumer reads; its schema is :data:`shoprec.schemas.RECOMMENDATION_SCHEMA`.

A producer replaces its own slice (model and scenario) whole, so lists never mix runs.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig


def ensure_tables(spark: SparkSession, cfg: ShoprecConfig) -> None:
    delta.ensure_table(
        spark,
        cfg.table("recommendations"),
        S.RECOMMENDATION_SCHEMA,
        [S.MODEL],
        checks=S.RECOMMENDATION_CHECKS,
    )
    delta.ensure_table(spark, cfg.table("eval_metrics"), S.EVAL_METRICS_SCHEMA, [S.MODEL])


def write_recommendations(
    spark: SparkSession,
    cfg: ShoprecConfig,
    recs: DataFrame,
    model: str,
    version: str,
    run_id: str,
    scenario: str,
    source: str,
) -> None:
    """Replace this model's list for ``scenario`` with ``recs`` (``user_key, rank, item_id, score``)."""
    rows = recs.select(
        S.USER_KEY,
        F.lit(scenario).alias(S.SCENARIO),
        F.col(S.RANK).cast("int").alias(S.RANK),
        S.ITEM_ID,
        F.col(S.SCORE).cast("double").alias(S.SCORE),
        (F.col(S.SOURCE) if S.SOURCE in recs.columns else F.lit(source)).alias(S.SOURCE),
        F.lit(model).alias(S.MODEL),
        F.lit(version).alias(S.MODEL_VERSION),
        F.lit(run_id).alias(S.RUN_ID),
        F.current_timestamp().alias(S.GENERATED_AT),
        (F.col(S.RULES) if S.RULES in recs.columns else F.lit(None).cast("array<string>")).alias(S.RULES),
        (F.col(S.REASON) if S.REASON in recs.columns else F.lit(None).cast(S.REASON_SCHEMA)).alias(S.REASON),
    )
    delta.replace_where(
        rows, cfg.table("recommendations"), f"{S.MODEL} = '{model}' AND {S.SCENARIO} = '{scenario}'"
    )
