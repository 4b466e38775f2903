"""Candidates for every serving user, each tagged with the source(s) that proposed it.

- ``embedding``: the fine-tuned retriever's top ``retrieval_k`` over the whole catalog (blocked
  retrieval, :mod:`shoprec.modeling.retrieval`, run in Spark tasks);
- ``collaborative_filtering``: ALS (implicit feedback, all gold interactions) top ``als_k``;
- ``popular``: the ``popular_k`` most popular items of the user's top category (of the whole
  catalog for users without one): what new users get;
- ``new_item``: the ``new_item_k`` best *new* items (launched in the last ``new_item_days``) by the
  retriever's text embedding: items nobody has interacted with yet still reach people;
- ``cooccurrence``: the ``cooc_k`` items that co-occur most with the user's recent items
  (bought-together / viewed-together, :func:`shoprec.modeling.ltr.cooccurrence`);
- ``recent``: the user's own ``recent_k`` most recent items (what people come back to buy; the
  rules drop what was bought already);
- ``category``: the ``category_k`` best items of the user's own categories (full category path):
  the user's share of the category × the item's share of the category's interactions
  (:class:`shoprec.modeling.ltr.Tastes`);
- ``related``: the ``related_k`` items the catalog links to the user's recent items (its
  complements and substitutes, :func:`shoprec.modeling.ltr.related_scores`);
- ``sequence``: the trained sequence retriever's top ``sequence_k`` (:mod:`shoprec.modeling.sequence`:
  a causal transformer over the user's items in order), when the model has one.

The union is de-duplicated per (user, item); ``source`` names every source that proposed the item,
joined with ``+`` in a fixed order; each source's score and rank are kept too, for the
learning-to-rank stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.modeling import ltr
from shoprec.modeling import sequence as seq
from shoprec.modeling.als import fit_als
from shoprec.modeling.retrieval import top_k_from

log = logging.getLogger(__name__)

EMBEDDING, ALS, POPULAR, NEW_ITEM = "embedding", "collaborative_filtering", "popular", "new_item"
COOCCURRENCE, RECENT, CATEGORY, RELATED = "cooccurrence", "recent", "category", "related"
SEQUENCE = "sequence"
SOURCES = (EMBEDDING, ALS, POPULAR, NEW_ITEM, COOCCURRENCE, RECENT, CATEGORY, RELATED, SEQUENCE)


def source_code(source: Column) -> Column:
    """``source`` (names joined with ``+``) as a bit mask over :data:`SOURCES` (a short): what a
    pair carries through the ranker instead of its string, decoded by :func:`source_name`."""
    names = F.split(source, r"\+")
    bits = [F.when(F.array_contains(names, s), 1 << i).otherwise(0) for i, s in enumerate(SOURCES)]
    code = sum(bits[1:], bits[0])
    return code.cast("short")


def source_name(code: Column) -> Column:
    """The ``source`` string back from :func:`source_code`'s mask."""
    combos = ["+".join(s for i, s in enumerate(SOURCES) if m >> i & 1) for m in range(1 << len(SOURCES))]
    return F.element_at(F.array(*[F.lit(c) for c in combos]), code.cast("int") + 1)


def _tag(df: DataFrame, source: str) -> DataFrame:
    """``(user_key, item_id, source, score, rank)`` from a source's top-K rows."""
    return df.select(
        S.USER_KEY,
        S.ITEM_ID,
        F.lit(source).alias(S.SOURCE),
        F.col(S.SCORE).cast("double").alias(S.SCORE),
        F.col(S.RANK).cast("int").alias(S.RANK),
    )


@dataclass(frozen=True)
class Signals:
    """What generating the candidates computed that ranking them reads too."""

    als_users: DataFrame | None  # (user_key, vector): ALS factors, None when ALS is off
    als_items: DataFrame | None
    cooc: DataFrame  # (user_key, item_id, cooc_sum, cooc_max, cooc_last)
    history: DataFrame  # (user_key, history_length)
    past: DataFrame  # (user_key, item_id, user_item_weight)
    popularity: DataFrame  # (item_id, seen_popularity, recent_popularity)
    recent: DataFrame  # (user_key, item_id, recency): the users' most recent items
    taste: ltr.Tastes  # the users' shares of each category path and brand
    related: DataFrame | None  # ltr.related_scores; None when the catalog links no items
    seq_users: DataFrame | None  # (user_key, vector): the sequence retriever's; None without one
    seq_items: DataFrame | None
    pairs: DataFrame  # ltr.cooccurrence: (item_id, other, cooc), what explanations name
    linked: DataFrame  # ltr.links: (item_id, other, relation)

    def features(
        self,
        scored: DataFrame,
        users: DataFrame,
        item_vectors: DataFrame,
        items: DataFrame,
        profiles: DataFrame,
    ) -> DataFrame:
        """``scored`` (from :func:`generate`) with the ranker's ``features``."""
        return ltr.assemble(
            scored, SOURCES, self.cooc, self.als_users, self.als_items, users, item_vectors, items, profiles,
            self.history, self.past, self.popularity, self.recent, self.taste, self.related,
            self.seq_users, self.seq_items,
        )  # fmt: skip


@dataclass(frozen=True)
class Shared:
    """What every user's candidates share: ALS factors, item co-occurrence, item popularity and
    the catalog's links, all computed over every user's interactions. A caller that scores a few
    users at a time (the stream, per micro-batch) computes them once and passes them again; the
    users' own signals (recent items, co-occurrence with them, their text and sequence vectors)
    are computed per call, so what a user just did counts at once."""

    als_users: DataFrame | None  # every user's factors
    als_items: DataFrame | None
    pairs: DataFrame
    popularity: DataFrame
    linked: DataFrame
    shares: DataFrame | None = None  # ltr.item_shares: each item's share of its category
    cut: DataFrame | None = None  # ltr.latest: the newest interaction's time


def shared(spark: SparkSession, cfg: ShoprecConfig, items: DataFrame, interactions: DataFrame) -> Shared:
    """:class:`Shared` over ``interactions``, materialised."""
    sc = cfg.scoring
    als_users: DataFrame | None = None
    als_items: DataFrame | None = None
    if sc.als_k:
        als_users, als_items = fit_als(spark, cfg, interactions)
        als_users, als_items = als_users.localCheckpoint(), als_items.localCheckpoint()
    pairs = ltr.cooccurrence(interactions, sc.cooc_window, sc.cooc_neighbours).localCheckpoint()
    popularity = ltr.item_popularity(interactions, cfg.evaluation.recent_days).localCheckpoint()
    shares = ltr.item_shares(interactions, items).localCheckpoint()
    cut = ltr.latest(interactions).localCheckpoint()
    return Shared(als_users, als_items, pairs, popularity, ltr.links(items).localCheckpoint(), shares, cut)


def popular_for(users: DataFrame, items: DataFrame, profiles: DataFrame, k: int) -> DataFrame:
    """``(user_key, item_id, score, rank)``: the top ``k`` items by popularity in the user's top
    category (the catalog's top ``k`` for users without a profile or a top category)."""
    by_pop = Window.partitionBy(S.TOP_CATEGORY).orderBy(F.desc(S.POPULARITY), S.ITEM_ID)
    per_cat = (
        items.withColumn(S.RANK, F.row_number().over(by_pop))
        .where(F.col(S.RANK) <= k)
        .select(S.TOP_CATEGORY, S.ITEM_ID, F.col(S.POPULARITY).alias(S.SCORE), S.RANK)
    )
    # the catalog's top k: k rows, numbered on the driver (a window over them would be one more
    # single-task window in the plan)
    top_k = items.orderBy(F.desc(S.POPULARITY), S.ITEM_ID).limit(k).select(S.ITEM_ID, S.POPULARITY).collect()
    overall = items.sparkSession.createDataFrame(
        [(r[S.ITEM_ID], float(r[S.POPULARITY]), rank) for rank, r in enumerate(top_k, start=1)],
        f"{S.ITEM_ID} STRING, {S.SCORE} DOUBLE, {S.RANK} INT",
    )
    top_cat = profiles.select(
        S.USER_KEY, F.element_at(F.col(S.TOP_CATEGORIES), 1)["name"].alias(S.TOP_CATEGORY)
    ).where(F.col(S.TOP_CATEGORY).isNotNull())
    cols = [S.USER_KEY, S.ITEM_ID, S.SCORE, S.RANK]
    with_cat = users.join(top_cat, S.USER_KEY).join(per_cat, S.TOP_CATEGORY).select(*cols)
    without = users.join(top_cat, S.USER_KEY, "left_anti").crossJoin(F.broadcast(overall))
    return with_cat.unionByName(without.select(*cols))


def generate(
    spark: SparkSession,
    cfg: ShoprecConfig,
    users: DataFrame,
    item_vectors: DataFrame,
    items: DataFrame,
    profiles: DataFrame,
    interactions: DataFrame,
    sequence_dir: str | None = None,
    common: Shared | None = None,
) -> tuple[DataFrame, Signals]:
    """``(user_key, item_id, source)`` for every user in ``users`` (``user_key, vector``) with each
    source's ``<source>_score`` and ``<source>_rank`` (null where the source did not propose the
    item), and the signals the ranker reuses. ``item_vectors`` (``item_id, vector``) are what the
    embedding source retrieves from, one broadcast or item-id shards (``evaluation.broadcast_mib``);
    ``sequence_dir`` is a trained model's directory,
    whose sequence retriever (when it has one) is a source and a signal too; ``common`` is
    :func:`shared`'s result when the caller keeps one, else it is computed here."""
    sc = cfg.scoring
    threads = cfg.evaluation.encoder.threads
    e = cfg.evaluation
    if not item_vectors.take(1):
        raise ShoprecError("no item embeddings to retrieve from: is the serving catalog empty?")
    found = top_k_from(
        spark, users, item_vectors, sc.retrieval_k, None, e.user_block, e.item_block, threads, e.broadcast_mib
    )
    parts = [_tag(found, EMBEDDING)]
    common = common or shared(spark, cfg, items, interactions)
    als_users: DataFrame | None = None
    als_items = common.als_items
    if sc.als_k and common.als_users is not None and als_items is not None:
        als_users = common.als_users.join(users.select(S.USER_KEY), S.USER_KEY, "left_semi").localCheckpoint()
        parts.append(
            _tag(
                top_k_from(
                    spark,
                    als_users,
                    als_items,
                    sc.als_k,
                    None,
                    e.user_block,
                    e.item_block,
                    broadcast_mib=e.broadcast_mib,
                ),
                ALS,
            )
        )
    if sc.popular_k:
        popular = popular_for(users.select(S.USER_KEY), items, profiles, sc.popular_k)
        parts.append(popular.select(S.USER_KEY, S.ITEM_ID, F.lit(POPULAR).alias(S.SOURCE), S.SCORE, S.RANK))
    if sc.new_item_k:
        last = items.agg(F.max(S.LAUNCH_DATE)).first()
        if last and last[0] is not None:
            fresh = items.where(F.col(S.LAUNCH_DATE) > F.date_sub(F.lit(last[0]), sc.new_item_days)).select(
                S.ITEM_ID
            )
            new = item_vectors.join(fresh, S.ITEM_ID, "left_semi").localCheckpoint()
            if new.take(1):
                found = top_k_from(
                    spark,
                    users,
                    new,
                    sc.new_item_k,
                    None,
                    e.user_block,
                    e.item_block,
                    threads,
                    e.broadcast_mib,
                )
                parts.append(_tag(found, NEW_ITEM))
    mine = interactions.join(users.select(S.USER_KEY), S.USER_KEY, "left_semi")
    recent = ltr.recent_items(mine, max(sc.cooc_recent, sc.recent_k))
    pairs = common.pairs
    cooc = ltr.cooc_scores(recent, pairs, sc.cooc_decay)
    cooc = cooc.join(items.select(S.ITEM_ID), S.ITEM_ID, "left_semi").localCheckpoint()
    if sc.recent_k:
        own = recent.where(F.col("recency") < sc.recent_k)
        parts.append(
            own.select(
                S.USER_KEY,
                S.ITEM_ID,
                F.lit(RECENT).alias(S.SOURCE),
                (1.0 / (1.0 + F.col("recency"))).alias(S.SCORE),
                (F.col("recency") + 1).cast("int").alias(S.RANK),
            )
        )
    taste = ltr.tastes(mine, interactions, items, common.shares, common.cut).checkpointed()
    if sc.category_k:
        parts.append(_tag(taste.top(sc.category_k), CATEGORY))
    if sc.cooc_k:
        best = Window.partitionBy(S.USER_KEY).orderBy(F.desc(ltr.COOC_SUM), S.ITEM_ID)
        top = cooc.withColumn(S.RANK, F.row_number().over(best)).where(F.col(S.RANK) <= sc.cooc_k)
        parts.append(
            top.select(
                S.USER_KEY,
                S.ITEM_ID,
                F.lit(COOCCURRENCE).alias(S.SOURCE),
                F.col(ltr.COOC_SUM).alias(S.SCORE),
                S.RANK,
            )
        )
    linked = common.linked
    related = ltr.related_scores(recent, linked, sc.cooc_decay).localCheckpoint() if linked.take(1) else None
    if sc.related_k and related is not None:
        best = Window.partitionBy(S.USER_KEY).orderBy(F.desc(ltr.RELATED_SCORE), S.ITEM_ID)
        top = related.where(F.col(ltr.RELATED_SCORE) > 0).withColumn(S.RANK, F.row_number().over(best))
        parts.append(
            top.where(F.col(S.RANK) <= sc.related_k).select(
                S.USER_KEY,
                S.ITEM_ID,
                F.lit(RELATED).alias(S.SOURCE),
                F.col(ltr.RELATED_SCORE).alias(S.SCORE),
                S.RANK,
            )
        )
    seq_users: DataFrame | None = None
    seq_items: DataFrame | None = None
    if sequence_dir is not None and seq.exists(sequence_dir):
        model = seq.loaded(sequence_dir)
        seq_items = model.item_vectors(spark).join(items.select(S.ITEM_ID), S.ITEM_ID, "left_semi")
        seq_items = seq_items.localCheckpoint()
        seq_users = model.user_vectors(mine, str(sequence_dir)).localCheckpoint()
        if sc.sequence_k:
            found = top_k_from(
                spark,
                seq_users,
                seq_items,
                sc.sequence_k,
                None,
                e.user_block,
                e.item_block,
                broadcast_mib=e.broadcast_mib,
            )
            parts.append(_tag(found, SEQUENCE))
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p)
    order = F.array(*[F.lit(s) for s in SOURCES])
    per_source = []
    for s in SOURCES:
        mine_ = F.col(S.SOURCE) == s
        per_source += [
            F.max(F.when(mine_, F.col(S.SCORE))).alias(ltr.score_column(s)),
            F.min(F.when(mine_, F.col(S.RANK))).alias(ltr.rank_column(s)),
        ]
    scored = (
        union.groupBy(S.USER_KEY, S.ITEM_ID)
        .agg(F.collect_set(S.SOURCE).alias("_s"), *per_source)
        .select(
            S.USER_KEY,
            S.ITEM_ID,
            F.array_join(F.filter(order, lambda s: F.array_contains("_s", s)), "+").alias(S.SOURCE),
            *[c for s in SOURCES for c in (ltr.score_column(s), ltr.rank_column(s))],
        )
    )
    history = mine.groupBy(S.USER_KEY).agg(F.count(F.lit(1)).cast("double").alias(ltr.HISTORY_LENGTH))
    popularity = common.popularity
    past = ltr.user_items(mine, cfg.features.positive_events)
    signals = Signals(
        als_users, als_items, cooc, history, past, popularity, recent.localCheckpoint(), taste, related,
        seq_users, seq_items, pairs, linked,
    )  # fmt: skip
    return scored, signals
