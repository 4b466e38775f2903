"""Fit the sequence retriever saved with a trained model (:mod:`shoprec.modeling.sequence`).

It learns from what the validation cut can see, like the learning-to-rank lists that read its
scores: a model fitted on the validation targets would score them as seen, and the ranker would
learn to trust it more than serving should. Its items' text vectors come from the fine-tuned item
tower of the same model. Trained on the driver over every visible interaction (a few minutes on 2
cores for Office's 53k reviews).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec import delta, splits
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.modeling import encoder, sequence

log = logging.getLogger(__name__)


def train_sequence(spark: SparkSession, cfg: ShoprecConfig, model_dir: Path) -> dict[str, Any] | None:
    """Fit and save the sequence retriever under ``model_dir``; its fit record, or None when
    ``training.sequence.enabled`` is off or no sequence was long enough to train on."""
    from shoprec.modeling import sasrec as sr

    q = cfg.training.sequence
    if not q.enabled:
        return None
    started = time.perf_counter()
    items = (
        delta.read(spark, cfg.table("gold_item_features")).where(F.col(S.SPLIT) == S.VALID).localCheckpoint()
    )
    stamp = items.agg(F.max(S.AS_OF)).first()
    if stamp is None or stamp[0] is None:
        raise ShoprecError(
            f"{cfg.table('gold_item_features')} has no validation split: run `shoprec features`"
        )
    examples = delta.read(spark, cfg.table("gold_training_examples")).where(F.col(S.SPLIT) == S.VALID)
    interactions = delta.read(spark, cfg.table("gold_interactions"))
    seen = splits.visible(interactions, cfg.features.split.mode, stamp[0], examples)
    text = encoder.embed(
        items.select(S.ITEM_ID, S.ITEM_TEXT),
        S.ITEM_ID,
        S.ITEM_TEXT,
        cfg.evaluation.encoder,
        "item",
        str(model_dir),
    ).toPandas()
    ids = sorted(text[S.ITEM_ID])
    by_id = dict(zip(text[S.ITEM_ID], text["vector"], strict=True))
    table = np.stack([np.asarray(by_id[i], dtype=np.float32) for i in ids])
    rows = seen.select(S.USER_KEY, S.ITEM_ID, S.EVENT_TIME).toPandas()
    spec = sr.SasrecSpec(
        dim=q.dim, layers=q.layers, heads=q.heads, max_len=q.max_len, dropout=q.dropout,
        learning_rate=q.learning_rate, batch_size=q.batch_size, max_epochs=q.max_epochs,
        patience=q.patience, seed=q.seed, ids=q.ids, time_gaps=q.time_gaps,
    )  # fmt: skip
    model, record = sequence.fit(rows, ids, table, spec)
    if not record["valid_ndcg_at_10"] >= 0:  # never validated (no sequence of 3 items): untrained
        log.warning(
            "sequence retriever not saved: no user has the three visible items it trains on; "
            "scoring goes without the sequence source"
        )
        return None
    out = sequence.save(model, model_dir, record)
    record = {**record, "items": len(ids), "seconds_total": time.perf_counter() - started}
    log.info(
        "sequence retriever: %d items, %d epochs, validation NDCG@10 %.4f, %.0fs -> %s",
        len(ids),
        record["epochs"],
        record["valid_ndcg_at_10"],
        record["seconds_total"],
        out,
    )
    return record
