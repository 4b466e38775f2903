"""Baselines the fine-tuned model must beat, each as user and item vectors scored by dot product.

Expressing every baseline as vectors lets one retrieval engine serve them all: it handles
exclusions, bounded memory and sampled ranking the same way for each.

- ``popularity``: user ``[1]``, item ``[log(1 + summed weight)]`` over the visible history;
- ``recent_popularity``: the same over the last ``recent_days`` before the cut;
- ``category_popularity``: the user's favourite category first (a one-hot match worth more than
  any popularity), then popularity; users without history fall back to plain popularity;
- ``als``: Spark ML ALS on implicit feedback; its factors are the vectors, and recommendation
  goes through blocked retrieval rather than ``recommendForAllUsers``;
- ``encoder``: a pretrained sentence encoder, zero-shot: the user's recent item titles and profile
  text against the item text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.evaluation import encoder
from shoprec.evaluation.data import EvalData
from shoprec.evaluation.retrieval import VECTOR

log = logging.getLogger(__name__)
#: A category match outweighs any popularity (log popularity stays far below this).
CATEGORY_BONUS = 1000.0


@dataclass
class Vectors:
    users: DataFrame  # (user_key, vector)
    items: DataFrame  # (item_id, vector)
    source: str  # the candidate source named in the recommendations contract


def _eval_users(data: EvalData) -> DataFrame:
    """Users with something to evaluate: a held-out positive or a sampled test event."""
    return data.truth.select(S.USER_KEY).unionByName(data.sampled.select(S.USER_KEY)).distinct()


def _popularity(inter: DataFrame) -> DataFrame:
    return inter.groupBy(S.ITEM_ID).agg(F.log1p(F.sum(S.WEIGHT)).alias("_pop"))


def _items_with(data: EvalData, pop: DataFrame, extra: list[Column] | None = None) -> DataFrame:
    joined = data.items.select(S.ITEM_ID, S.CATEGORY_PATH).join(pop, S.ITEM_ID, "left")
    return joined.select(
        S.ITEM_ID, F.array(F.coalesce("_pop", F.lit(0.0)).cast("float"), *(extra or [])).alias(VECTOR)
    )


def popularity(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
    users = _eval_users(data).select(S.USER_KEY, F.array(F.lit(1.0).cast("float")).alias(VECTOR))
    return Vectors(users, _items_with(data, _popularity(data.visible)), "popularity")


def recent_popularity(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
    since = data.as_of - timedelta(days=cfg.evaluation.recent_days)
    recent = data.visible.where(F.col(S.EVENT_TIME) >= F.lit(since))
    users = _eval_users(data).select(S.USER_KEY, F.array(F.lit(1.0).cast("float")).alias(VECTOR))
    return Vectors(users, _items_with(data, _popularity(recent)), "popularity")


def category_popularity(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
    """One-hot over the catalog's categories (leaves of the path): fine up to some thousands."""
    cats = [r[0] for r in data.items.select(S.CATEGORY_PATH).distinct().orderBy(S.CATEGORY_PATH).collect()]
    index = F.create_map(*[x for i, c in enumerate(cats) for x in (F.lit(c), F.lit(i))])
    n = len(cats)

    def one_hot(idx: Column, value: float) -> Column:
        return F.transform(
            F.sequence(F.lit(0), F.lit(n - 1)), lambda j: F.when(j == idx, value).otherwise(0.0).cast("float")
        )

    items = data.items.select(S.ITEM_ID, S.CATEGORY_PATH).join(_popularity(data.visible), S.ITEM_ID, "left")
    items = items.select(
        S.ITEM_ID,
        F.concat(
            F.array(F.coalesce("_pop", F.lit(0.0)).cast("float")), one_hot(index[F.col(S.CATEGORY_PATH)], 1.0)
        ).alias(VECTOR),
    )
    favourite = (
        data.visible.join(data.items.select(S.ITEM_ID, S.CATEGORY_PATH), S.ITEM_ID)
        .groupBy(S.USER_KEY, S.CATEGORY_PATH)
        .agg(F.sum(S.WEIGHT).alias("_w"))
        .withColumn(
            "_r", F.row_number().over(Window.partitionBy(S.USER_KEY).orderBy(F.desc("_w"), S.CATEGORY_PATH))
        )
        .where(F.col("_r") == 1)
        .select(S.USER_KEY, S.CATEGORY_PATH)
    )
    users = (
        _eval_users(data)
        .join(favourite, S.USER_KEY, "left")
        .select(
            S.USER_KEY,
            F.concat(
                F.array(F.lit(1.0).cast("float")), one_hot(index[F.col(S.CATEGORY_PATH)], CATEGORY_BONUS)
            ).alias(VECTOR),
        )
    )
    return Vectors(users, items, "popularity")


def fit_als(spark: SparkSession, cfg: ShoprecConfig, interactions: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Implicit-feedback ALS on ``interactions``: ``(user_key, vector)`` and ``(item_id, vector)``.
    Ids become dense integers by rank, not by a fitted indexer model."""
    from pyspark.ml.recommendation import ALS

    a = cfg.evaluation.als
    ratings = interactions.groupBy(S.USER_KEY, S.ITEM_ID).agg(F.sum(S.WEIGHT).cast("float").alias("_w"))
    user_ids = (
        ratings.select(S.USER_KEY)
        .distinct()
        .withColumn("_u", F.dense_rank().over(Window.orderBy(S.USER_KEY)) - 1)
    )
    item_ids = (
        ratings.select(S.ITEM_ID)
        .distinct()
        .withColumn("_i", F.dense_rank().over(Window.orderBy(S.ITEM_ID)) - 1)
    )
    user_ids, item_ids = user_ids.localCheckpoint(), item_ids.localCheckpoint()
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


def als(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
    """Spark ML ALS on the interactions the split could see."""
    users, items = fit_als(spark, cfg, data.visible)
    return Vectors(users.join(_eval_users(data), S.USER_KEY, "left_semi"), items, "collaborative_filtering")


def user_text(data: EvalData, history_items: int, with_profile: bool = True) -> DataFrame:
    """``(user_key, text)``: the user's most recent item titles (newest first), then the profile.

    Without the profile it is exactly the text the fine-tuned user tower was trained on
    (``training.prepare``)."""
    return history_texts(data.items, data.sequences, data.profiles if with_profile else None, history_items)


def history_texts(
    items: DataFrame, sequences: DataFrame, profiles: DataFrame | None, history_items: int
) -> DataFrame:
    """``(user_key, text)`` from item titles, behaviour sequences and (optionally) profiles."""
    titles = items.select(S.ITEM_ID, S.TITLE)
    recent = (
        sequences.select(S.USER_KEY, F.posexplode(F.reverse(S.ITEMS)).alias("_pos", S.ITEM_ID))
        .where(F.col("_pos") < history_items)
        .join(titles, S.ITEM_ID, "left")
        .groupBy(S.USER_KEY)
        .agg(F.array_sort(F.collect_list(F.struct("_pos", S.TITLE))).alias("_t"))
        .select(S.USER_KEY, F.concat_ws("; ", F.transform("_t", lambda t: t[S.TITLE])).alias("_recent"))
    )
    if profiles is None:
        return recent.select(S.USER_KEY, F.concat(F.lit("recently: "), "_recent").alias("text"))
    return recent.join(profiles.select(S.USER_KEY, S.PROFILE_TEXT), S.USER_KEY, "full_outer").select(
        S.USER_KEY,
        F.concat_ws(". ", F.concat(F.lit("recently: "), "_recent"), S.PROFILE_TEXT).alias("text"),
    )


def encoder_zero_shot(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
    e = cfg.evaluation.encoder
    texts = user_text(data, e.history_items).join(_eval_users(data), S.USER_KEY, "left_semi")
    users = encoder.embed(texts, S.USER_KEY, "text", e, tower="user")
    items = encoder.embed(data.items.select(S.ITEM_ID, S.ITEM_TEXT), S.ITEM_ID, S.ITEM_TEXT, e, tower="item")
    return Vectors(users, items, "embedding")


Builder = Callable[[SparkSession, ShoprecConfig, EvalData], Vectors]


def two_tower(path: str, history_items: int) -> Builder:
    """The fine-tuned retriever at ``path`` as a model the evaluation can run."""

    def build(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
        e = cfg.evaluation.encoder
        texts = user_text(data, history_items, with_profile=False).join(
            _eval_users(data), S.USER_KEY, "left_semi"
        )
        users = encoder.embed(texts, S.USER_KEY, "text", e, tower="user", path=path)
        items = encoder.embed(
            data.items.select(S.ITEM_ID, S.ITEM_TEXT), S.ITEM_ID, S.ITEM_TEXT, e, "item", path
        )
        return Vectors(users, items, "embedding")

    return build


BASELINES: dict[str, Builder] = {
    "popularity": popularity,
    "category_popularity": category_popularity,
    "recent_popularity": recent_popularity,
    "als": als,
    "encoder": encoder_zero_shot,
}
