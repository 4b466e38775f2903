"""Raw exports → bronze Delta tables: rows as read, with their source file and batch.

Readers pass the raw contract's schema explicitly and keep the text of any record that does not
parse in ``_corrupt_record``, so nothing is dropped on the way in. Ingest is incremental: an
ingest log (a Delta table) records every file loaded; a run loads only files it has not seen, as
one batch whose id is a hash of those files. Writing a batch is ``replaceWhere`` on its id, so a
run killed between the bronze write and the log update redoes the same batch to the same result.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StringType, StructField, StructType

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig, SourceConfig
from shoprec.etl.mapping import read_mapped

log = logging.getLogger(__name__)

EVENTS, CATALOG = "events", "catalog"


@dataclass(frozen=True)
class RawFile:
    path: str
    size: int
    modified: datetime


def list_files(spark: SparkSession, location: str) -> list[RawFile]:
    """Data files under a folder (recursively) or matching a glob, through Hadoop's file systems.

    Names starting with ``_`` or ``.`` (``_SUCCESS``, ``.crc``, ``_labels/``) are not data.
    """
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    pattern = jvm.org.apache.hadoop.fs.Path(location)  # type: ignore[union-attr]
    fs = pattern.getFileSystem(conf)
    out: list[RawFile] = []
    for status in fs.globStatus(pattern) or []:
        if status.isDirectory():
            it = fs.listFiles(status.getPath(), True)
            statuses = []
            while it.hasNext():
                statuses.append(it.next())
        else:
            statuses = [status]
        for st in statuses:
            path = st.getPath()
            rel = path.toUri().getPath()[len(status.getPath().toUri().getPath()) :]
            if any(part.startswith(("_", ".")) and "=" not in part for part in rel.split("/") if part):
                continue
            modified = datetime.fromtimestamp(st.getModificationTime() / 1000, tz=UTC)
            out.append(RawFile(path.toString(), int(st.getLen()), modified))
    return sorted(out, key=lambda f: f.path)


def read_raw(
    spark: SparkSession,
    path: str | list[str],
    schema: StructType,
    fmt: str,
    base_path: str | None = None,
) -> DataFrame:
    """Read raw files with ``schema``; unparseable records land in ``_corrupt_record``, not nowhere."""
    paths = [path] if isinstance(path, str) else path
    # CSV holds no lists: its nested columns (the catalog's relations) are read as the text they
    # are, by position like every column, and left empty
    nested = [f.name for f in schema.fields if isinstance(f.dataType, (ArrayType, MapType, StructType))]
    contract = schema
    if fmt == "csv" and nested:
        schema = StructType(
            [StructField(f.name, StringType(), True) if f.name in nested else f for f in schema.fields]
        )
    if fmt == "parquet":
        reader = spark.read.schema(schema)
    else:
        reader = (
            spark.read.schema(S.with_corrupt_record(schema))
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", S.CORRUPT_RECORD)
        )
    if base_path:  # keeps partition folders (event_date=...) as columns when reading single files
        reader = reader.option("basePath", base_path)
    if fmt == "parquet":
        df = reader.parquet(*paths).withColumn(S.CORRUPT_RECORD, F.lit(None).cast("string"))
    elif fmt == "json":
        df = reader.json(paths)
    else:
        df = reader.option("header", True).option("escape", '"').csv(paths)
    cols = [
        F.lit(None).cast(f.dataType).alias(f.name) if fmt == "csv" and f.name in nested else F.col(f.name)
        for f in contract.fields
    ] + [F.col(S.CORRUPT_RECORD)]
    if S.EVENT_DATE in df.columns:  # the export folder's partition value (event_date=YYYY-MM-DD)
        cols.append(F.col(S.EVENT_DATE).cast("date").alias(S.EVENT_DATE))
    return df.select(*cols, F.col("_metadata.file_path").alias(S.SOURCE_FILE))


def batch_id(files: list[RawFile]) -> str:
    """A batch is named by the files it holds: the same files always make the same batch."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.path}\t{f.size}\t{f.modified.isoformat()}\n".encode())
    return digest.hexdigest()[:16]


def with_batch(df: DataFrame, batch: str) -> DataFrame:
    return df.withColumn(S.INGEST_BATCH, F.lit(batch)).withColumn(S.INGEST_TIME, F.current_timestamp())


_DAY = re.compile(rf"/{S.EVENT_DATE}=(\d{{4}}-\d{{2}}-\d{{2}})/")


def _folder_day(path: str) -> str | None:
    """The ``event_date=YYYY-MM-DD`` partition folder's day in ``path``, if any."""
    m = _DAY.search(path)
    return m.group(1) if m else None


def new_files(spark: SparkSession, cfg: ShoprecConfig, source: str, location: str) -> list[RawFile]:
    """Files under ``location`` that the ingest log has not recorded yet (with
    ``processing_date``: none from an ``event_date=`` folder of a later day; they wait for theirs)."""
    files = list_files(spark, location)
    if cfg.processing_date is not None:
        day = cfg.processing_date.isoformat()
        later = [f for f in files if (d := _folder_day(f.path)) is not None and d > day]
        if later:
            log.info("%s: %d files of days after %s wait for their own run", source, len(later), day)
        files = [f for f in files if f not in later]
    log_loc = cfg.table("ingest_log")
    delta.ensure_table(spark, log_loc, S.INGEST_LOG_SCHEMA)
    seen = {
        r[0]
        for r in delta.read(spark, log_loc).where(F.col(S.SOURCE) == source).select(S.FILE_PATH).collect()
    }
    return [f for f in files if f.path not in seen]


def _record(
    spark: SparkSession, cfg: ShoprecConfig, source: str, batch: str, files: list[RawFile], bronze: DataFrame
) -> int:
    """Record the batch's files with their row counts in the ingest log; return the batch's rows."""
    counts = {r[0]: r[1] for r in bronze.groupBy(S.SOURCE_FILE).count().collect()}
    now = datetime.now(tz=UTC)
    rows = [(f.path, source, f.size, f.modified, batch, int(counts.get(f.path, 0)), now) for f in files]
    delta.merge_upsert(
        spark,
        spark.createDataFrame(rows, S.INGEST_LOG_SCHEMA),
        cfg.table("ingest_log"),
        [S.FILE_PATH, S.SOURCE],
    )
    return int(sum(counts.values()))


@dataclass(frozen=True)
class IngestResult:
    source: str
    batch_id: str | None
    files: int
    rows: int
    location: str


def feed_bases(cfg: ShoprecConfig, source: str) -> list[str]:
    """The folders (or globs) ``source``'s files arrive under: each configured feed's, else the
    generator's folder under ``paths.raw``."""
    feeds: tuple[SourceConfig, ...] = getattr(cfg.sources, source)
    if feeds:
        return [cfg.resolve(feed.path, f"sources.{source}[{i}].path") for i, feed in enumerate(feeds)]
    return [f"{cfg.path('raw')}/{source}"]


def ingest(spark: SparkSession, cfg: ShoprecConfig, source: str) -> IngestResult:
    """Load the new raw files of ``source`` (``events`` or ``catalog``) into its bronze table."""
    bases = feed_bases(cfg, source)
    per_feed = [new_files(spark, cfg, source, base) for base in bases]
    if not any(per_feed):
        log.info("bronze %s: no new files under %s", source, ", ".join(bases))
        return IngestResult(source, None, 0, 0, cfg.table(f"bronze_{source}"))
    files = sorted({f.path: f for fs in per_feed for f in fs}.values(), key=lambda f: f.path)
    return ingest_files(spark, cfg, source, per_feed, batch_id(files))


def ingest_files(
    spark: SparkSession, cfg: ShoprecConfig, source: str, per_feed: list[list[RawFile]], batch: str
) -> IngestResult:
    """Load ``per_feed`` (the files of each of :func:`feed_bases`, in its order) into ``source``'s
    bronze table as batch ``batch`` and record them in the ingest log. The batch's rows are
    replaced, so loading the same batch again changes nothing (the stream replays a micro-batch so)."""
    started = time.perf_counter()
    schema = S.RAW_EVENT_SCHEMA if source == EVENTS else S.RAW_CATALOG_SCHEMA
    location = cfg.table(f"bronze_{source}")
    feeds: tuple[SourceConfig, ...] = getattr(cfg.sources, source)
    bases = feed_bases(cfg, source)
    files = sorted({f.path: f for fs in per_feed for f in fs}.values(), key=lambda f: f.path)
    if feeds:
        parts = [
            read_mapped(spark, cfg, f"{source}[{i}]", feed, [f.path for f in fs], schema)
            for i, (feed, fs) in enumerate(zip(feeds, per_feed, strict=True))
            if fs
        ]
        df = functools.reduce(DataFrame.unionByName, parts)
    else:
        df = read_raw(spark, [f.path for f in files], schema, cfg.generator.format, base_path=bases[0])
    written = write_batch(spark, cfg, source, df, batch)
    rows = _record(spark, cfg, source, batch, files, written)
    log.info(
        "bronze %s: batch %s, %d files, %d rows in %.1fs -> %s",
        source,
        batch,
        len(files),
        rows,
        time.perf_counter() - started,
        location,
    )
    return IngestResult(source, batch, len(files), rows, location)


def write_batch(spark: SparkSession, cfg: ShoprecConfig, source: str, df: DataFrame, batch: str) -> DataFrame:
    """Replace batch ``batch`` of ``source``'s bronze table with ``df`` (raw-contract columns,
    ``_corrupt_record`` and the source file) and return the rows written."""
    table_schema = S.BRONZE_EVENT_SCHEMA if source == EVENTS else S.BRONZE_CATALOG_SCHEMA
    location = cfg.table(f"bronze_{source}")
    delta.ensure_table(spark, location, table_schema, partition_by=[S.EVENT_DATE] if source == EVENTS else [])
    df = with_batch(df, batch)
    if source == EVENTS and S.EVENT_DATE not in df.columns:
        # no export-day folders: the day of the event, or of the ingest when the time is unreadable
        df = df.withColumn(S.EVENT_DATE, F.coalesce(F.to_date(S.EVENT_TIME), F.current_date()))
    df = df.select([f.name for f in table_schema.fields])
    delta.replace_where(df, location, f"{S.INGEST_BATCH} = '{batch}'")
    return delta.read(spark, location).where(F.col(S.INGEST_BATCH) == batch)


def ingest_all(spark: SparkSession, cfg: ShoprecConfig) -> list[IngestResult]:
    """Ingest the catalog first (cleaning events checks their items against it), then events."""
    return [ingest(spark, cfg, CATALOG), ingest(spark, cfg, EVENTS)]
