"""Train only when something training reads has changed (or the schedule says it is due).

A daily pipeline runs ``train`` every day. Fingerprinting whole-table versions retrained on
unchanged examples daily: the incremental ``features`` run rewrites the serving split of
``gold_item_features`` and merges new events into ``gold_interactions``, which bumps those
tables' versions although the train and validation snapshots training reads stay as they were.
So the fingerprint here is of *content*: a hash of every row training reads (the train and
validation splits of the gold tables, and the interactions the validation cut can see), with the
settings that shape the model and shoprec's own version. A finished training with the same
fingerprint whose model is still where this configuration keeps models is re-used: no new MLflow
run, no new registered version.

``training.retrain`` adds a schedule on top: ``daily`` and ``weekly`` train at most once per day or
per seven days (by the processing date), even when the data changed in between.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import MapType

import shoprec
from shoprec import delta, splits
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.modeling import encoder

log = logging.getLogger(__name__)

#: MLflow run tags: the content fingerprint, the model directory, the processing date.
DATA_TAG, MODEL_DIR_TAG, DATE_TAG = "data_fingerprint", "model_dir", "processing_date"
#: The gold tables whose train and validation splits training reads.
_SPLIT_TABLES = ("gold_training_examples", "gold_item_features", "gold_user_profiles", "gold_sequences")
_MOD = 2_147_483_647  # 2**31 - 1: row hashes summed as decimals never overflow


def _hashable(df: DataFrame) -> list[Column]:
    """Every column, in name order, maps as sorted entry arrays (Spark cannot hash a map, and a
    map's entry order is not part of its content)."""
    out = []
    for name in sorted(df.columns):
        col = F.col(name)
        if isinstance(df.schema[name].dataType, MapType):
            col = F.array_sort(F.map_entries(col))
        out.append(col)
    return out


def content_hash(df: DataFrame) -> str:
    """A hash of ``df``'s rows that ignores their order and partitioning: the row count, the sum
    and the xor of the rows' 64-bit hashes."""
    h = F.xxhash64(*_hashable(df))
    row = df.agg(F.count(F.lit(1)), F.sum(F.pmod(h, F.lit(_MOD)).cast("decimal(38,0)")), F.bit_xor(h)).first()
    parts = [str(v) for v in row] if row is not None else []
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def data_fingerprint(spark: SparkSession, cfg: ShoprecConfig) -> str:
    """The fingerprint of what a training on ``cfg`` reads and of how it would train."""
    parts: dict[str, Any] = {}
    for name in _SPLIT_TABLES:
        table = delta.read(spark, cfg.table(name)).where(F.col(S.SPLIT).isin(S.TRAIN, S.VALID))
        parts[name] = content_hash(table)
    items = delta.read(spark, cfg.table("gold_item_features")).where(F.col(S.SPLIT) == S.VALID)
    stamp = items.agg(F.max(S.AS_OF)).first()
    if stamp is not None and stamp[0] is not None:
        examples = delta.read(spark, cfg.table("gold_training_examples")).where(F.col(S.SPLIT) == S.VALID)
        interactions = delta.read(spark, cfg.table("gold_interactions"))
        seen = splits.visible(interactions, cfg.features.split.mode, stamp[0], examples)
        parts["gold_interactions"] = content_hash(seen)
    # the settings that shape the model or the lists its rankers are fitted on
    settings = {
        "shoprec": shoprec.__version__,
        "training": {k: v for k, v in dataclasses.asdict(cfg.training).items() if k != "retrain"},
        "features": dataclasses.asdict(cfg.features),
        "scoring": dataclasses.asdict(cfg.scoring),
        "encoder": dataclasses.asdict(cfg.evaluation.encoder),
        "vectors": encoder.VECTORS,
    }
    text = json.dumps([parts, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Reusable:
    """A finished training to serve again instead of training."""

    run_id: str
    model_dir: Path
    version: str
    why: str  # "unchanged" or "not due"


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def processing_day(cfg: ShoprecConfig) -> date:
    """The day a run trains for: ``processing_date`` (a scheduler's), else today."""
    return cfg.processing_date or datetime.now().date()


def find(client: Any, experiment_id: str, cfg: ShoprecConfig, fingerprint: str) -> Reusable | None:
    """The newest finished training to re-use, None when this one should train: one with the same
    ``fingerprint``, or (``retrain: daily | weekly``) the newest one when the schedule says
    training is not due yet. A run whose model directory is gone, is not under this
    configuration's ``paths.models``, or has no registered version is never re-used."""
    models = Path(cfg.path("models")).resolve()
    runs = client.search_runs(
        [experiment_id],
        f"attributes.status = 'FINISHED' and tags.{DATA_TAG} != ''",
        order_by=["attributes.start_time DESC"],
        max_results=200,
    )

    def usable(run: Any, why: str) -> Reusable | None:
        path = Path(run.data.tags.get(MODEL_DIR_TAG, ""))
        if not path.is_dir() or path.resolve().parent != models:
            return None
        name = cfg.training.registered_model
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
        if not versions:
            return None
        newest = max(versions, key=lambda v: int(v.version))
        return Reusable(run.info.run_id, path, str(newest.version), why)

    for run in runs:
        if run.data.tags.get(DATA_TAG) == fingerprint:
            found = usable(run, "unchanged")
            if found is not None:
                return found
    every = cfg.training.retrain
    if every == "on_change" or not runs:
        return None
    last = _day(runs[0].data.tags.get(DATE_TAG))
    today = processing_day(cfg)
    days = 1 if every == "daily" else 7
    if last is not None and 0 <= (today - last).days < days:
        return usable(runs[0], "not due")
    return None
