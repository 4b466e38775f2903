"""Candidates for every serving user, each tagged with the source(s) that proposed it.

- ``embedding``: the fine-tuned retriever's top ``retrieval_k`` over the whole catalog (the blocked
  retrieval of the evaluation module, run in Spark tasks);
- ``collaborative_filtering``: ALS (implicit feedback, all gold interactions) top ``als_k``;
- ``popular``: the ``popular_k`` most popular items of the user's top category (of the whole
  catalog for users without one): what new users get;
- ``new_item``: the ``new_item_k`` best *new* items (launched in the last ``new_item_days``) by the
  retriever's text embedding: items nobody has interacted with yet still reach people.

The union is de-duplicated per (user, item); ``source`` names every source that proposed the item,
joined with ``+`` in a fixed order.
"""

from __future__ import annotations

import logging

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.evaluation.retrieval import ItemMatrix, top_k

log = logging.getLogger(__name__)

EMBEDDING, ALS, POPULAR, NEW_ITEM = "embedding", "collaborative_filtering", "popular", "new_item"
SOURCES = (EMBEDDING, ALS, POPULAR, NEW_ITEM)


def source_code(source: Column) -> Column:
    """``source`` (names joined with ``+``) as a bit mask over :data:`SOURCES` (a byte): what a
    pair carries through the ranker instead of its string, decoded by :func:`source_name`."""
    names = F.split(source, r"\+")
    bits = [F.when(F.array_contains(names, s), 1 << i).otherwise(0) for i, s in enumerate(SOURCES)]
    code = sum(bits[1:], bits[0])
    return code.cast("byte")


def source_name(code: Column) -> Column:
    """The ``source`` string back from :func:`source_code`'s mask."""
    combos = ["+".join(s for i, s in enumerate(SOURCES) if m >> i & 1) for m in range(1 << len(SOURCES))]
    return F.element_at(F.array(*[F.lit(c) for c in combos]), code.cast("int") + 1)


def _tag(df: DataFrame, source: str) -> DataFrame:
    return df.select(S.USER_KEY, S.ITEM_ID, F.lit(source).alias(S.SOURCE))


def popular_for(users: DataFrame, items: DataFrame, profiles: DataFrame, k: int) -> DataFrame:
    """``(user_key, item_id)``: the top ``k`` items by popularity in the user's top category (the
    catalog's top ``k`` for users without a profile or a top category)."""
    by_pop = Window.partitionBy(S.TOP_CATEGORY).orderBy(F.desc(S.POPULARITY), S.ITEM_ID)
    per_cat = (
        items.withColumn("_r", F.row_number().over(by_pop))
        .where(F.col("_r") <= k)
        .select(S.TOP_CATEGORY, S.ITEM_ID)
    )
    overall = items.orderBy(F.desc(S.POPULARITY), S.ITEM_ID).limit(k).select(S.ITEM_ID)
    top_cat = profiles.select(
        S.USER_KEY, F.element_at(F.col(S.TOP_CATEGORIES), 1)["name"].alias(S.TOP_CATEGORY)
    ).where(F.col(S.TOP_CATEGORY).isNotNull())
    with_cat = users.join(top_cat, S.USER_KEY).join(per_cat, S.TOP_CATEGORY).select(S.USER_KEY, S.ITEM_ID)
    without = users.join(top_cat, S.USER_KEY, "left_anti").crossJoin(F.broadcast(overall))
    return with_cat.unionByName(without.select(S.USER_KEY, S.ITEM_ID))


def generate(
    spark: SparkSession,
    cfg: ShoprecConfig,
    users: DataFrame,
    matrix: ItemMatrix,
    items: DataFrame,
    profiles: DataFrame,
    interactions: DataFrame,
) -> DataFrame:
    """``(user_key, item_id, source)`` for every user in ``users`` (``user_key, vector``);
    ``matrix`` holds the serving items' vectors (collected once by the caller, which scores with
    it too)."""
    sc = cfg.scoring
    threads = cfg.evaluation.encoder.threads
    e = cfg.evaluation
    if len(matrix.ids) == 0:
        raise ShoprecError("no item embeddings to retrieve from: is the serving catalog empty?")
    parts = [
        _tag(
            top_k(spark, users, matrix, sc.retrieval_k, None, e.user_block, e.item_block, threads), EMBEDDING
        )
    ]
    if sc.als_k:
        from shoprec.evaluation.baselines import fit_als

        als_users, als_items = fit_als(spark, cfg, interactions)
        als_users = als_users.join(users.select(S.USER_KEY), S.USER_KEY, "left_semi")
        parts.append(
            _tag(
                top_k(
                    spark,
                    als_users,
                    ItemMatrix.from_frame(als_items),
                    sc.als_k,
                    None,
                    e.user_block,
                    e.item_block,
                ),
                ALS,
            )
        )
    if sc.popular_k:
        parts.append(_tag(popular_for(users.select(S.USER_KEY), items, profiles, sc.popular_k), POPULAR))
    if sc.new_item_k:
        last = items.agg(F.max(S.LAUNCH_DATE)).first()
        if last and last[0] is not None:
            fresh = items.where(F.col(S.LAUNCH_DATE) > F.date_sub(F.lit(last[0]), sc.new_item_days)).select(
                S.ITEM_ID
            )
            new = np.isin(matrix.ids, [r[0] for r in fresh.collect()])
            new_matrix = ItemMatrix(matrix.ids[new], matrix.matrix[new])
            if len(new_matrix.ids):
                parts.append(_tag(top_k(spark, users, new_matrix, sc.new_item_k, None), NEW_ITEM))
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p)
    order = F.array(*[F.lit(s) for s in SOURCES])
    return (
        union.groupBy(S.USER_KEY, S.ITEM_ID)
        .agg(F.collect_set(S.SOURCE).alias("_s"))
        .select(
            S.USER_KEY,
            S.ITEM_ID,
            F.array_join(F.filter(order, lambda s: F.array_contains("_s", s)), "+").alias(S.SOURCE),
        )
    )
