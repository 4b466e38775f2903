"""Gold training examples → a tokenised Delta table that Petastorm streams to the trainers.

Tokenising once in Spark (a pandas UDF with the model's fast tokenizer) rather than in every
training process: the trainers then only copy fixed-length integer arrays into tensors, and the
same tokens serve every epoch and every restart. ``bench/training.py`` measures both ways.

Each row: the user text ("recently: <titles of the last N items, newest first>"), the positive
item's text, the item's dense index (to mask in-batch duplicates), and log q(item), the item's
share of the training positives, for the sampling-bias correction of the in-batch softmax.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.indexes import dense_index
from shoprec.modeling.pretrained import packaged_model_dir
from shoprec.modeling.text import recent_titles

log = logging.getLogger(__name__)

USER_IDS, USER_MASK, ITEM_IDS, ITEM_MASK = (
    "user_input_ids",
    "user_attention_mask",
    "item_input_ids",
    "item_attention_mask",
)
ITEM_INDEX, LOGQ, USER_TEXT, ITEM_TEXT = "item_index", "logq", "user_text", "item_text"
HARD_INDEX, HARD_TEXT, HARD_IDS, HARD_MASK = (
    "hard_index",
    "hard_text",
    "hard_input_ids",
    "hard_attention_mask",
)
TOKENS_SCHEMA = StructType(
    [
        StructField(S.SPLIT, StringType(), False),
        StructField(S.USER_KEY, StringType(), False),
        StructField(S.POSITIVE_ITEM, StringType(), False),
        StructField(ITEM_INDEX, IntegerType(), False),
        StructField(LOGQ, FloatType(), False),
        StructField(USER_TEXT, StringType(), False),
        StructField(ITEM_TEXT, StringType(), False),
        StructField(USER_IDS, ArrayType(IntegerType(), False), False),
        StructField(USER_MASK, ArrayType(IntegerType(), False), False),
        StructField(ITEM_IDS, ArrayType(IntegerType(), False), False),
        StructField(ITEM_MASK, ArrayType(IntegerType(), False), False),
        StructField(HARD_INDEX, IntegerType(), False),
        StructField(HARD_TEXT, StringType(), False),
        StructField(HARD_IDS, ArrayType(IntegerType(), False), False),
        StructField(HARD_MASK, ArrayType(IntegerType(), False), False),
    ]
)
#: What the trainers read (the texts stay in the table for people, not for the model).
LOADER_FIELDS = (ITEM_INDEX, LOGQ, USER_IDS, USER_MASK, ITEM_IDS, ITEM_MASK)
#: ... and with hard negatives on.
HARD_FIELDS = (HARD_INDEX, HARD_IDS, HARD_MASK)


@dataclass(frozen=True)
class Prepared:
    location: str
    rows: int
    items: int


def model_path(cfg: ShoprecConfig) -> str:
    return cfg.training.model_path or str(packaged_model_dir())


def texts(examples: DataFrame, items: DataFrame, history_items: int) -> DataFrame:
    """``examples`` (history_items, positive_item) with the user text and the positive's text."""
    hist = recent_titles(examples, "_row", S.HISTORY_ITEMS, items, history_items).withColumnRenamed(
        "text", USER_TEXT
    )
    return examples.join(hist, "_row").join(
        items.select(F.col(S.ITEM_ID).alias(S.POSITIVE_ITEM), F.col(S.ITEM_TEXT).alias(ITEM_TEXT)),
        S.POSITIVE_ITEM,
    )


def sample(examples: DataFrame, max_examples: int | None) -> DataFrame:
    """About ``max_examples`` of ``examples`` (all when unset), chosen by a hash of each example: the
    same ones on every run and every machine, so the ranker sees the retriever's examples."""
    if not max_examples:
        return examples
    total = examples.count()
    if total <= max_examples:
        return examples
    return examples.where(
        (F.abs(F.xxhash64(S.USER_KEY, S.TARGET_TIME, S.POSITIVE_ITEM)) % total) < max_examples
    )


def _tokenize(df: DataFrame, path: str, user_len: int, item_len: int, hard: bool) -> DataFrame:
    """Fixed-length token ids and masks for the user, item and (when ``hard``) hard-negative texts;
    without hard negatives their arrays hold one 0, which the trainers never read."""
    out_schema = StructType(
        [f for f in df.schema.fields]
        + [
            StructField(c, ArrayType(IntegerType(), False), False)
            for c in (USER_IDS, USER_MASK, ITEM_IDS, ITEM_MASK, HARD_IDS, HARD_MASK)
        ]
    )
    columns = [(USER_TEXT, USER_IDS, USER_MASK, user_len), (ITEM_TEXT, ITEM_IDS, ITEM_MASK, item_len)]
    if hard:
        columns.append((HARD_TEXT, HARD_IDS, HARD_MASK, item_len))

    def run(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        for pdf in batches:
            if not hard:
                none = [np.zeros(1, dtype=np.int32)] * len(pdf)
                pdf[HARD_IDS], pdf[HARD_MASK] = none, none
            for text_col, ids, mask, length in columns:
                enc = tok(
                    pdf[text_col].tolist(),
                    padding="max_length",
                    truncation=True,
                    max_length=length,
                    return_tensors="np",
                )
                pdf[ids] = list(enc["input_ids"].astype(np.int32))
                pdf[mask] = list(enc["attention_mask"].astype(np.int32))
            yield pdf

    return df.mapInPandas(run, out_schema)


SOURCE = "shoprec.tokens.source"


def _source(spark: SparkSession, cfg: ShoprecConfig, splits: tuple[str, ...]) -> str:
    """What the tokens are made from: the gold tables' versions and the settings that shape them."""
    import hashlib
    import json

    versions = [
        delta.for_location(spark, cfg.table(n)).history(1).select("version").first()
        for n in ("gold_training_examples", "gold_item_features")
    ]
    t = cfg.training
    shape = [
        model_path(cfg),
        t.user_max_length,
        t.item_max_length,
        t.history_items,
        t.max_examples,
        t.processes,
        t.hard_negatives,
        t.hard_negative_pool,
    ]
    text = json.dumps([[v[0] if v else None for v in versions], shape, list(splits)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_hard_negative(
    rows: DataFrame, items: DataFrame, index: DataFrame, on: bool, pool: int
) -> DataFrame:
    """``rows`` with a hard negative (index and text; -1 and "" when off or none): one of the
    ``pool`` most popular items of the positive's top category (the category-popularity
    baseline's list), not the positive, picked by a hash of the example."""
    if not on:
        return rows.withColumn(HARD_INDEX, F.lit(-1)).withColumn(HARD_TEXT, F.lit(""))
    ranked = Window.partitionBy(S.TOP_CATEGORY).orderBy(F.desc(S.POPULARITY), S.ITEM_ID)
    top = (
        items.select(S.ITEM_ID, S.TOP_CATEGORY, S.POPULARITY)
        .withColumn("_r", F.row_number().over(ranked))
        .where(F.col("_r") <= pool)
        .groupBy(S.TOP_CATEGORY)
        .agg(F.sort_array(F.collect_list(F.struct("_r", S.ITEM_ID))).alias("_top"))
    )
    category = items.select(F.col(S.ITEM_ID).alias(S.POSITIVE_ITEM), S.TOP_CATEGORY)
    others = F.filter(F.transform("_top", lambda t: t[S.ITEM_ID]), lambda i: i != F.col(S.POSITIVE_ITEM))
    pick = F.element_at(
        "_others",
        (F.pmod(F.xxhash64(S.USER_KEY, S.POSITIVE_ITEM, USER_TEXT), F.size("_others")) + 1).cast("int"),
    )
    text = items.select(F.col(S.ITEM_ID).alias("_hard"), F.col(S.ITEM_TEXT).alias("_hard_text"))
    return (
        rows.join(category, S.POSITIVE_ITEM, "left")
        .join(top, S.TOP_CATEGORY, "left")
        .withColumn("_others", F.coalesce(others, F.array().cast("array<string>")))
        .withColumn("_hard", F.when(F.size("_others") > 0, pick))
        .join(text, "_hard", "left")
        .join(index.select(F.col(S.ITEM_ID).alias("_hard"), F.col(ITEM_INDEX).alias("_hi")), "_hard", "left")
        .withColumn(HARD_INDEX, F.coalesce(F.col("_hi").cast("int"), F.lit(-1)))
        .withColumn(HARD_TEXT, F.coalesce("_hard_text", F.lit("")))
        .drop("_hard", "_hard_text", "_hi", "_others", "_top", S.TOP_CATEGORY)
    )


def prepare(
    spark: SparkSession, cfg: ShoprecConfig, splits: tuple[str, ...] = (S.TRAIN, S.VALID)
) -> Prepared:
    """Write ``training_tokens`` for ``splits`` from the gold examples (replacing those splits).

    Skipped when the table already holds tokens made from the same gold versions and settings, so
    a re-run (after a crash, say) trains on the same table version and can resume its checkpoints.
    """
    t = cfg.training
    location = cfg.table("training_tokens")
    source = _source(spark, cfg, splits)
    delta.ensure_table(spark, location, TOKENS_SCHEMA, [S.SPLIT])
    if delta.properties(spark, location).get(SOURCE) == source:
        existing = delta.read(spark, location)
        count = existing.where(F.col(S.SPLIT) == S.TRAIN).count()
        log.info("training tokens are up to date (%d train examples) -> %s", count, location)
        return Prepared(location, count, existing.select(ITEM_INDEX).distinct().count())
    examples = delta.read(spark, cfg.table("gold_training_examples")).where(F.col(S.SPLIT).isin(*splits))
    items = delta.read(spark, cfg.table("gold_item_features")).where(F.col(S.SPLIT) == S.TRAIN)
    if items.limit(1).count() == 0:
        raise ShoprecError(
            f"{cfg.table('gold_item_features')} has no train split: run `shoprec features` first"
        )
    examples = sample(examples, t.max_examples)
    examples = examples.withColumn("_row", F.monotonically_increasing_id())
    index = dense_index(items, S.ITEM_ID, ITEM_INDEX)
    train = examples.where(F.col(S.SPLIT) == S.TRAIN)
    freq = train.groupBy(S.POSITIVE_ITEM).agg(F.count(F.lit(1)).alias("_n"))
    n_train = max(1, train.count())
    rows = (
        texts(examples, items, t.history_items)
        .join(index.withColumnRenamed(S.ITEM_ID, S.POSITIVE_ITEM), S.POSITIVE_ITEM)
        .join(freq, S.POSITIVE_ITEM, "left")
        .select(
            S.SPLIT,
            S.USER_KEY,
            S.POSITIVE_ITEM,
            F.col(ITEM_INDEX).cast("int").alias(ITEM_INDEX),
            F.log((F.coalesce("_n", F.lit(0)) + 1.0) / (n_train + 1.0)).cast("float").alias(LOGQ),
            USER_TEXT,
            ITEM_TEXT,
        )
    )
    rows = _with_hard_negative(rows, items, index, t.hard_negatives, t.hard_negative_pool)
    tokens = _tokenize(rows, model_path(cfg), t.user_max_length, t.item_max_length, t.hard_negatives)
    # several files per split: Petastorm shards by row group, so every process gets some
    files = max(4, 2 * t.processes)
    quoted = ", ".join(f"'{s}'" for s in splits)
    out = tokens.repartition(files).select(*TOKENS_SCHEMA.fieldNames())
    if delta.read(spark, location).columns != TOKENS_SCHEMA.fieldNames():
        log.info("%s was written by another version of shoprec: rewriting it whole", location)
        delta.overwrite(out, location, new_schema=[S.SPLIT])
    else:
        delta.replace_where(out, location, f"{S.SPLIT} IN ({quoted})")
    delta.set_property(spark, location, SOURCE, source)
    written = delta.read(spark, location).where(F.col(S.SPLIT) == S.TRAIN).count()
    n_items = items.count()
    log.info("training tokens: %d train examples over %d items -> %s", written, n_items, location)
    return Prepared(location, written, n_items)
