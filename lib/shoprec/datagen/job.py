"""``shoprec generate``: write a synthetic shop's raw exports with Spark, one task per block.

Layout under ``paths.raw``::

    events/event_date=YYYY-MM-DD/part-*.{json,csv,parquet}   behaviour events, by export day
    catalog/part-*.{json,csv,parquet}                          the catalog export
    _labels/events/, _labels/catalog/                          (row_key, defect) per spoiled row
    _manifest.json                                             the generator settings and row counts

The generator owns its output folder and replaces it whole: for one seed it is the same data.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from shoprec import schemas as S
from shoprec.config import GeneratorConfig, ShoprecConfig
from shoprec.datagen import defects, shop

log = logging.getLogger(__name__)

_DEFECT_SEED = 20
_ROW_KEY_COL, _DEFECT_COL = "_row_key", "_defect"
_LINE = "value"


@dataclass(frozen=True)
class GenerateResult:
    """Where the raw exports went and how many rows each holds."""

    raw_dir: str
    events_dir: str
    catalog_dir: str
    labels_dir: str
    event_rows: int
    catalog_rows: int
    labelled_event_rows: int
    labelled_catalog_rows: int
    seconds: float


def _iso(ts: Any) -> str | None:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)) or ts is pd.NaT:
        return None
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _plain(value: Any) -> Any:
    """A JSON/CSV-ready Python value (numpy and pandas scalars → builtins; NA → None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return _iso(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _payload_schema(contract: StructType, fmt: str, partition: str | None) -> StructType:
    """Output schema of a generating task for ``fmt``, plus the label columns."""
    fields: list[StructField]
    if fmt == "json":
        fields = [StructField(_LINE, StringType())]
    elif fmt == "csv":
        fields = [StructField(f.name, StringType()) for f in contract.fields]
    else:
        fields = list(contract.fields)
    if partition:
        fields.append(StructField(partition, StringType()))
    return StructType(
        [*fields, StructField(_ROW_KEY_COL, StringType()), StructField(_DEFECT_COL, StringType())]
    )


def _texts(values: pd.Series[Any], encode: Callable[[Any], str], quote: str = "") -> NDArray[Any]:
    """``encode`` of every value (None for a missing one), called once per distinct value.

    Timestamps are formatted by numpy in one call; other columns repeat few values (types,
    users, items, prices), so encoding the distinct ones is much cheaper than one call per row.
    ``quote`` surrounds formatted timestamps (JSON strings).
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values.dtype):
        stamps = values.dt.tz_convert(None) if isinstance(values.dtype, pd.DatetimeTZDtype) else values
        raw = stamps.to_numpy(dtype="datetime64[ms]")
        text: NDArray[Any] = quote + np.datetime_as_string(raw, unit="ms").astype(object) + ("Z" + quote)
        text[np.isnat(raw)] = None
        return text
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    encoded = np.array(
        [encode(_plain(v)) if _plain(v) is not None else None for v in uniques] + [None], dtype=object
    )
    out: NDArray[Any] = encoded[codes]  # code -1 (missing) picks the trailing None
    return out


def _json_lines(df: pd.DataFrame, names: list[str], malformed: NDArray[np.bool_]) -> NDArray[Any]:
    """One JSON object per row as ``json.dumps`` writes it: keys in contract order, missing
    values left out."""
    line = np.full(len(df), "", dtype=object)
    for name in names:
        values = _texts(df[name], lambda v: json.dumps(v, ensure_ascii=False), quote='"')
        present = pd.notna(values)
        line[present] = line[present] + f", {json.dumps(name)}: " + values[present]
    lines = np.array(["{" + text[2:] + "}" for text in line], dtype=object)
    for k in np.flatnonzero(malformed):  # a record cut off mid-write
        lines[k] = lines[k][: len(lines[k]) // 2]
    return lines


def _serialise(df: pd.DataFrame, contract: StructType, fmt: str, partition: str | None) -> pd.DataFrame:
    """Turn typed rows into what the exporter writes: JSON lines, CSV strings or typed columns."""
    names = [f.name for f in contract.fields]
    malformed = df.get(defects.MALFORMED_FLAG, pd.Series(False, index=df.index)).to_numpy(bool)
    out = pd.DataFrame(index=df.index)
    if fmt == "json":
        out[_LINE] = _json_lines(df, names, malformed)
    elif fmt == "csv":
        for name in names:
            out[name] = _texts(df[name], str)
        if malformed.any():
            out.loc[malformed, S.EVENT_TIME] = "yesterday evening"  # a value no timestamp parser takes
    else:
        for f in contract.fields:
            out[f.name] = df[f.name]
    if partition:
        out[partition] = df[partition].astype(str)
    out[_ROW_KEY_COL] = df[_ROW_KEY_COL]
    out[_DEFECT_COL] = df[_DEFECT_COL]
    return out


def _with_labels(df: pd.DataFrame, labels: pd.DataFrame, keys: pd.Series[Any]) -> pd.DataFrame:
    """Attach (row_key, defect) to the spoiled rows; a key found twice labels its last copy only."""
    df = df.copy()
    if _DEFECT_COL not in df:
        df[_ROW_KEY_COL] = None
        df[_DEFECT_COL] = None
    last = pd.Series(np.arange(len(df)), index=keys.to_numpy())
    last = last[~last.index.duplicated(keep="last")]
    position = last.reindex(labels[S.ROW_KEY].to_numpy())
    found = position.notna().to_numpy()
    rows = position.to_numpy()[found].astype(np.int64)
    df.iloc[rows, df.columns.get_indexer([_ROW_KEY_COL])[0]] = labels[S.ROW_KEY].to_numpy()[found]
    df.iloc[rows, df.columns.get_indexer([_DEFECT_COL])[0]] = labels[S.DEFECT].to_numpy()[found]
    return df


def event_partition(cfg: GeneratorConfig, block: int) -> pd.DataFrame:
    """All rows of one user block as the exporter writes them, spoiled and labelled."""
    clean = shop.events_block(cfg, block)
    rng = np.random.default_rng([cfg.seed, _DEFECT_SEED, block])
    events, labels = defects.spoil_events(
        clean, cfg.bad_row_rate, rng, allow_malformed=cfg.format != "parquet"
    )
    if cfg.bad_row_rate > 0 and len(clean):
        n_bots = max(1, round(cfg.users_per_block * cfg.bad_row_rate * 0.02))
        for k in range(n_bots):
            uid = shop.user_id(shop.n_users(cfg) + block * 1000 + k)
            day = pd.Timestamp(cfg.start_date, tz="UTC") + pd.Timedelta(days=int(rng.integers(0, cfg.days)))
            bots = defects.bot_events(clean, uid, day, rng)  # real items only: one defect per row
            bots[defects.MALFORMED_FLAG] = False
            events = pd.concat([events, bots], ignore_index=True)
            labels = pd.concat(
                [labels, pd.DataFrame({S.ROW_KEY: bots[S.EVENT_ID], S.DEFECT: defects.BOT_USER})],
                ignore_index=True,
            )
    events = _with_labels(events, labels, events[S.EVENT_ID])
    return _serialise(events, S.RAW_EVENT_SCHEMA, cfg.format, S.EVENT_DATE)


def catalog_partition(cfg: GeneratorConfig, block: int) -> pd.DataFrame:
    catalog = shop.catalog_block(cfg, block)
    rng = np.random.default_rng([cfg.seed, _DEFECT_SEED + 1, block])
    catalog, labels = defects.spoil_catalog(catalog, cfg.bad_row_rate, rng, id_prefix=f"itm-d{block:03d}-")
    key = catalog[S.ITEM_ID].astype(object).where(catalog[S.ITEM_ID].notna(), catalog[S.TITLE])
    stale = labels[S.DEFECT] == defects.STALE_DUPLICATE
    catalog = _with_labels(catalog, labels[~stale], key)
    # A stale duplicate shares its item id with the current row: its key adds the timestamp.
    stamp = pd.to_datetime(catalog[S.UPDATED_AT]).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    catalog = _with_labels(catalog, labels[stale], catalog[S.ITEM_ID].astype(str) + "@" + stamp)
    return _serialise(catalog, S.RAW_CATALOG_SCHEMA, cfg.format, None)


def _blocks(spark: SparkSession, n: int) -> DataFrame:
    return spark.range(0, n, numPartitions=max(1, n))


def _write(df: DataFrame, fmt: str, path: str, partition: str | None) -> None:
    data = df.drop(_ROW_KEY_COL, _DEFECT_COL)
    writer = data.write.mode("overwrite")
    if partition:
        writer = writer.partitionBy(partition)
    if fmt == "json":
        writer.option("compression", "none").text(path)
    elif fmt == "csv":
        writer.option("header", True).option("escape", '"').csv(path)
    else:
        writer.parquet(path)


def _write_labels(df: DataFrame, path: str) -> int:
    labels = df.where(F.col(_DEFECT_COL).isNotNull()).select(
        F.col(_ROW_KEY_COL).alias(S.ROW_KEY), F.col(_DEFECT_COL).alias(S.DEFECT)
    )
    labels.coalesce(1).write.mode("overwrite").parquet(path)
    return labels.count()


def _previous_result(raw: str, g: GeneratorConfig) -> GenerateResult | None:
    """The result of an earlier run with the same settings, whose output is still complete.

    Re-running the generator for the same settings must not rewrite the files: new file names
    would look like new exports to the incremental ingest.
    """
    manifest = Path(raw, "_manifest.json")
    if "://" in raw or not manifest.is_file():
        return None
    try:
        stored = json.loads(manifest.read_text())
    except ValueError:
        return None
    if stored.get("generator") != json.loads(json.dumps(asdict(g), default=str)):
        return None
    return GenerateResult(**stored["result"])


def generate(spark: SparkSession, cfg: ShoprecConfig) -> GenerateResult:
    """Generate the raw exports described by ``cfg.generator`` under ``cfg.path('raw')``."""
    g = cfg.generator
    started = time.perf_counter()
    raw = cfg.path("raw")
    previous = _previous_result(raw, g)
    if previous is not None:
        log.info("raw exports for these generator settings already exist in %s: nothing to do", raw)
        return previous
    events_dir, catalog_dir, labels_dir = f"{raw}/events", f"{raw}/catalog", f"{raw}/_labels"
    if "://" not in raw:
        Path(raw, "_manifest.json").unlink(missing_ok=True)
    log.info(
        "generating %d users x %d items over %d days from %s (seed %d, %s, bad rows %.2f%%) into %s",
        shop.n_users(g),
        shop.n_items(g),
        g.days,
        g.start_date,
        g.seed,
        g.format,
        100 * g.bad_row_rate,
        raw,
    )

    def gen_events(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        for batch in batches:
            for block in batch["id"]:
                yield event_partition(g, int(block))

    def gen_catalog(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        for batch in batches:
            for block in batch["id"]:
                yield catalog_partition(g, int(block))

    counts: dict[str, int] = {}
    for name, fn, n_blocks, contract, partition, out in (
        ("catalog", gen_catalog, shop.n_item_blocks(g), S.RAW_CATALOG_SCHEMA, None, catalog_dir),
        ("events", gen_events, shop.n_user_blocks(g), S.RAW_EVENT_SCHEMA, S.EVENT_DATE, events_dir),
    ):
        t0 = time.perf_counter()
        df = _blocks(spark, n_blocks).mapInPandas(fn, _payload_schema(contract, g.format, partition))
        df = df.persist(StorageLevel.DISK_ONLY)  # written twice: the data, then its labels
        _write(df, g.format, out, partition)
        counts[f"{name}_labels"] = _write_labels(df, f"{labels_dir}/{name}")
        counts[name] = df.count()
        df.unpersist()
        log.info(
            "%s: %d rows (%d labelled bad) in %.1fs -> %s",
            name,
            counts[name],
            counts[f"{name}_labels"],
            time.perf_counter() - t0,
            out,
        )

    result = GenerateResult(
        raw_dir=raw,
        events_dir=events_dir,
        catalog_dir=catalog_dir,
        labels_dir=labels_dir,
        event_rows=counts["events"],
        catalog_rows=counts["catalog"],
        labelled_event_rows=counts["events_labels"],
        labelled_catalog_rows=counts["catalog_labels"],
        seconds=time.perf_counter() - started,
    )
    if "://" not in raw:  # written last: its presence says the output is complete
        manifest = {"generator": asdict(g), "result": asdict(result)}
        Path(raw, "_manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    log.info("generated in %.1fs", result.seconds)
    return result
