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
  text against the item text;
- ``sasrec``: SASRec, the standard ID-based sequential recommender (:mod:`shoprec.modeling.sasrec`);
- ``sequence``: shoprec's sequence retriever, the same network reading the items' text vectors
  (zero-shot here; ``shoprec run`` also measures it over the fine-tuned item tower).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import SasrecConfig, ShoprecConfig
from shoprec.evaluation.data import EvalData
from shoprec.modeling import encoder
from shoprec.modeling.als import fit_als
from shoprec.modeling.retrieval import VECTOR
from shoprec.modeling.text import history_texts

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


def als(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
    """Spark ML ALS on the interactions the split could see."""
    users, items = fit_als(spark, cfg, data.visible)
    return Vectors(users.join(_eval_users(data), S.USER_KEY, "left_semi"), items, "collaborative_filtering")


def user_text(data: EvalData, history_items: int, with_profile: bool = True) -> DataFrame:
    """``(user_key, text)``: the user's most recent item titles (newest first), then the profile.

    Without the profile it is exactly the text the fine-tuned user tower was trained on and is
    served with (:func:`shoprec.modeling.text.history_texts`, one function for all three)."""
    return history_texts(data.items, data.sequences, data.profiles if with_profile else None, history_items)


def encoder_zero_shot(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
    e = cfg.evaluation.encoder
    texts = user_text(data, e.history_items).join(_eval_users(data), S.USER_KEY, "left_semi")
    users = encoder.embed(texts, S.USER_KEY, "text", e, tower="user")
    items = encoder.embed(data.items.select(S.ITEM_ID, S.ITEM_TEXT), S.ITEM_ID, S.ITEM_TEXT, e, tower="item")
    return Vectors(users, items, "embedding")


def _sequences(data: EvalData) -> tuple[list[str], list[str], list[Any], list[Any]]:
    """The catalog's item ids (index i + 1 is ``ids[i]``) and, per user with visible events, their
    items in time order with each step's time-gap bucket (:func:`shoprec.modeling.sequence.fold`,
    the same steps the trained sequence retriever reads)."""
    from shoprec.modeling import sequence as seq

    ids = sorted(r[0] for r in data.items.select(S.ITEM_ID).collect())
    index = {item: i + 1 for i, item in enumerate(ids)}
    rows = data.visible.select(S.USER_KEY, S.ITEM_ID, S.EVENT_TIME).toPandas()
    users, sequences, gaps = seq.fold(rows, index)
    return ids, users, list(sequences), list(gaps)


def _sequence_vectors(
    spark: SparkSession,
    data: EvalData,
    ids: list[str],
    users: list[str],
    user_vectors: Any,
    item_vectors: Any,
    source: str,
) -> Vectors:
    import numpy as np
    import pandas as pd

    user_df = spark.createDataFrame(
        pd.DataFrame({S.USER_KEY: users, VECTOR: [v.tolist() for v in user_vectors]}),
        f"{S.USER_KEY} string, {VECTOR} array<float>",
    ).join(_eval_users(data), S.USER_KEY, "left_semi")
    item_df = spark.createDataFrame(
        pd.DataFrame({S.ITEM_ID: ids, VECTOR: [v.tolist() for v in np.asarray(item_vectors, np.float32)]}),
        f"{S.ITEM_ID} string, {VECTOR} array<float>",
    )
    return Vectors(user_df, item_df, source)


def _spec(a: SasrecConfig, **extra: Any) -> Any:
    from shoprec.modeling import sasrec as sr

    return sr.SasrecSpec(
        dim=a.dim, layers=a.layers, heads=a.heads, max_len=a.max_len, dropout=a.dropout,
        learning_rate=a.learning_rate, batch_size=a.batch_size, max_epochs=a.max_epochs,
        patience=a.patience, seed=a.seed, **extra,
    )  # fmt: skip


def sasrec(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
    """SASRec (:mod:`shoprec.modeling.sasrec`) trained on the sequences the split could see, IDs
    only and no time gaps, as in the paper. Trained on the driver: a baseline."""
    from shoprec.modeling import sasrec as sr

    ids, users, sequences, _ = _sequences(data)
    model, _ = sr.fit(sequences, len(ids), _spec(cfg.evaluation.sasrec))
    return _sequence_vectors(
        spark, data, ids, users, sr.encode(model, sequences), sr.item_vectors(model), "sasrec"
    )


def sequence_retriever(path: str | None = None) -> Builder:
    """shoprec's sequence retriever (:mod:`shoprec.modeling.sasrec` with text): a causal transformer
    over the user's items, each the pretrained transformer's text vector of the item (the
    fine-tuned item tower at ``path``, else the zero-shot encoder) through a learned projection,
    with positions and time gaps, trained on the sequences the split could see."""

    def build(spark: SparkSession, cfg: ShoprecConfig, data: EvalData) -> Vectors:
        import numpy as np

        from shoprec.modeling import sasrec as sr

        q = cfg.evaluation.sequence
        ids, users, sequences, gaps = _sequences(data)
        e = cfg.evaluation.encoder
        text = encoder.embed(
            data.items.select(S.ITEM_ID, S.ITEM_TEXT), S.ITEM_ID, S.ITEM_TEXT, e, "item", path
        ).toPandas()
        by_id = dict(zip(text[S.ITEM_ID], text[VECTOR], strict=True))
        table = np.stack([np.asarray(by_id[i], dtype=np.float32) for i in ids])
        spec = _spec(q, ids=q.ids, time_gaps=q.time_gaps)
        model, _ = sr.fit(sequences, len(ids), spec, text=table, gaps=gaps)
        return _sequence_vectors(
            spark, data, ids, users, sr.encode(model, sequences, gaps), sr.item_vectors(model), "sequence"
        )

    return build


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
    "sasrec": sasrec,
    "sequence": sequence_retriever(),
}
