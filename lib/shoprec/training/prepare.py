"""Gold training examples → a tokenised Delta table that Petastorm streams to the trainers.

Tokenising once in Spark (a pandas UDF with the model's fast tokenizer) rather than in every
training process: the trainers then only copy fixed-length integer arrays into tensors, and the
same tokens serve every epoch and every restart. ``bench/loader.py`` measures both ways.

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
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.training.pretrained import packaged_model_dir

log = logging.getLogger(__name__)

USER_IDS, USER_MASK, ITEM_IDS, ITEM_MASK = (
    "user_input_ids",
    "user_attention_mask",
    "item_input_ids",
    "item_attention_mask",
)
ITEM_INDEX, LOGQ, USER_TEXT, ITEM_TEXT = "item_index", "logq", "user_text", "item_text"
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
    ]
)
#: What the trainers read (the texts stay in the table for people, not for the model).
LOADER_FIELDS = (ITEM_INDEX, LOGQ, USER_IDS, USER_MASK, ITEM_IDS, ITEM_MASK)


@dataclass(frozen=True)
class Prepared:
    location: str
    rows: int
    items: int


def model_path(cfg: ShoprecConfig) -> str:
    return cfg.training.model_path or str(packaged_model_dir())


def history_text(history: Column, n: int) -> Column:
    """``"recently: a; b; c"`` from an array of titles in time order (newest named first)."""
    newest = F.slice(F.reverse(history), 1, n)
    return F.concat(F.lit("recently: "), F.array_join(F.filter(newest, lambda t: t.isNotNull()), "; "))


def texts(examples: DataFrame, items: DataFrame, history_items: int) -> DataFrame:
    """``examples`` (history_items, positive_item) with the user text and the positive's text."""
    title = items.select(S.ITEM_ID, S.TITLE)
    hist = (
        examples.select("_row", F.posexplode(S.HISTORY_ITEMS).alias("_pos", S.ITEM_ID))
        .join(title, S.ITEM_ID, "left")
        .groupBy("_row")
        .agg(
            F.array_sort(F.collect_list(F.struct("_pos", F.coalesce(S.TITLE, F.lit("")).alias("_t")))).alias(
                "_h"
            )
        )
        .select("_row", history_text(F.transform("_h", lambda h: h["_t"]), history_items).alias(USER_TEXT))
    )
    return examples.join(hist, "_row").join(
        items.select(F.col(S.ITEM_ID).alias(S.POSITIVE_ITEM), F.col(S.ITEM_TEXT).alias(ITEM_TEXT)),
        S.POSITIVE_ITEM,
    )


def _tokenize(df: DataFrame, path: str, user_len: int, item_len: int) -> DataFrame:
    out_schema = StructType(
        [f for f in df.schema.fields]
        + [
            StructField(c, ArrayType(IntegerType(), False), False)
            for c in (USER_IDS, USER_MASK, ITEM_IDS, ITEM_MASK)
        ]
    )

    def run(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        for pdf in batches:
            for text_col, ids, mask, length in (
                (USER_TEXT, USER_IDS, USER_MASK, user_len),
                (ITEM_TEXT, ITEM_IDS, ITEM_MASK, item_len),
            ):
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
    ]
    text = json.dumps([[v[0] if v else None for v in versions], shape, list(splits)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    detail = delta.for_location(spark, location).detail().select("properties").first()
    if detail and (detail[0] or {}).get(SOURCE) == source:
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
    if t.max_examples:
        # a deterministic sample: the same examples on every run and every machine
        total = examples.count()
        if total > t.max_examples:
            examples = examples.where(
                (F.abs(F.xxhash64(S.USER_KEY, S.TARGET_TIME, S.POSITIVE_ITEM)) % total) < t.max_examples
            )
    examples = examples.withColumn("_row", F.monotonically_increasing_id())
    index = items.select(S.ITEM_ID).withColumn(ITEM_INDEX, F.dense_rank().over(Window.orderBy(S.ITEM_ID)) - 1)
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
    tokens = _tokenize(rows, model_path(cfg), t.user_max_length, t.item_max_length)
    # several files per split: Petastorm shards by row group, so every process gets some
    files = max(4, 2 * t.processes)
    quoted = ", ".join(f"'{s}'" for s in splits)
    delta.replace_where(tokens.repartition(files), location, f"{S.SPLIT} IN ({quoted})")
    spark.sql(f"ALTER TABLE {delta.sql_name(location)} SET TBLPROPERTIES ('{SOURCE}' = '{source}')")
    written = delta.read(spark, location).where(F.col(S.SPLIT) == S.TRAIN).count()
    n_items = items.count()
    log.info("training tokens: %d train examples over %d items -> %s", written, n_items, location)
    return Prepared(location, written, n_items)
