"""``shoprec stream``: new behaviour folded in and its users re-scored, one micro-batch at a time.

A Structured Streaming query over raw events, arriving either as files under the events feeds'
folders (the batch ingest's folders, formats and mappings) or on a Kafka topic (one JSON value
per event, in the raw contract). Each micro-batch (``foreachBatch``) goes through the batch path's
own code, in the batch path's order, so there is one copy of every rule:

bronze (the micro-batch's rows, replaced by its id) → :func:`shoprec.etl.silver.clean_batch`
(rules, quarantine with reasons, pseudonyms, reconciliation, MERGE into silver) →
:func:`shoprec.features.job.fold_batch` (the batch gold's incremental fold, for the batch's
users only: interactions, their serving sequences, state and profiles) →
:func:`shoprec.scoring.job.score` of the batch's users only, with the champion model and each
scenario's rules and reasons → MERGE into ``recommendations`` →
a row of freshness figures in ``stream_metrics``.

Exactly once: a micro-batch's id is the query's id (kept in its checkpoint) and the epoch, which
Spark replays unchanged after a restart; every write either replaces that id's rows or MERGEs on
keys, and the batch's reconciled row in ``run_metrics`` marks it cleaned. A file loaded by the
daily ``ingest`` is skipped by the stream and the other way round: both record what they took in
the ingest log.

For a file source only file names go through the query (Spark's file source, or Auto Loader on
Databricks, remembers which it has seen); their content is read by the batch reader, so a
malformed line is quarantined exactly as a batch ingest would quarantine it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.etl import bronze
from shoprec.etl.bronze import EVENTS, RawFile
from shoprec.etl.silver import clean_batch
from shoprec.features.job import ensure_gold, fold_batch
from shoprec.modeling import candidates
from shoprec.scoring.job import score

log = logging.getLogger(__name__)

#: When an event reached shoprec: its file's modification time, or its Kafka message's timestamp.
ARRIVED = "arrived_at"
_FEED = "_feed"
SHARED_INTERACTIONS, SHARED_ITEMS = "shared_interactions_version", "shared_items_version"
#: Spark's ``binaryFile`` rows; the content column is never selected, so never read.
_LISTING = StructType(
    [
        StructField("path", StringType(), False),
        StructField("modificationTime", TimestampType(), False),
        StructField("length", LongType(), False),
        StructField("content", BinaryType(), True),
    ]
)

STREAM_METRICS_SCHEMA = StructType(
    [
        StructField(S.INGEST_BATCH, StringType(), False),
        StructField("query_id", StringType(), False),
        StructField("epoch", LongType(), False),
        StructField("source", StringType(), False),
        StructField("started_at", TimestampType(), False),
        StructField("finished_at", TimestampType(), False),
        StructField("input_rows", LongType(), False),
        StructField("silver_rows", LongType(), False),
        StructField("quarantined_rows", LongType(), False),
        StructField("rescored_users", LongType(), False),
        StructField(S.RUN_ID, StringType(), True),
        #: The gold versions the shared signals it scored with were computed from (:class:`Common`).
        StructField(SHARED_INTERACTIONS, LongType(), True),
        StructField(SHARED_ITEMS, LongType(), True),
        #: Per re-scored user: seconds from the arrival of its newest event in the batch to the
        #: MERGE of its new lists (the freshness a shopper sees).
        StructField("lag_seconds", ArrayType(DoubleType()), False),
    ]
)


@dataclass
class BatchResult:
    batch: str
    epoch: int
    input_rows: int = 0
    silver_rows: int = 0
    quarantined_rows: int = 0
    deduplicated_rows: int = 0
    users: int = 0
    #: The scoring run that wrote the batch's users' lists (the ``run_id`` of their rows).
    run_id: str | None = None
    lags: list[float] = field(default_factory=list)
    seconds: float = 0.0
    #: Wall seconds per step (bronze, silver, gold, arrivals, shared, score, metrics): where a
    #: batch's time goes, for the log and ``bench/stream.py``.
    steps: dict[str, float] = field(default_factory=dict)


def batch_name(query_id: str, epoch: int) -> str:
    """The ingest batch of a micro-batch: the same after a restart from the same checkpoint (the
    query id lives there), different for a new query, whose epochs count from 0 again."""
    return f"stream-{hashlib.sha256(query_id.encode()).hexdigest()[:8]}-{epoch:08d}"


def _query_id(spark: SparkSession, checkpoint: str) -> str:
    """The query's id, from its checkpoint's ``metadata`` file (written when the query starts)."""
    text = "\n".join(r[0] for r in spark.read.text(f"{checkpoint}/metadata").collect())
    return str(json.loads(text)["id"])


def _files_source(spark: SparkSession, cfg: ShoprecConfig) -> DataFrame:
    """One row per newly arrived file under each events feed: its path, size, modification time
    and feed. Only the listing goes through the query; the batch reader reads the content."""
    st = cfg.stream
    streams = []
    for i, base in enumerate(bronze.feed_bases(cfg, EVENTS)):
        if st.file_reader == "cloudFiles":  # Databricks Auto Loader: notification-based listing
            reader = spark.readStream.format("cloudFiles").option("cloudFiles.format", "binaryFile")
            if st.max_files_per_trigger:
                reader = reader.option("cloudFiles.maxFilesPerTrigger", str(st.max_files_per_trigger))
        else:
            reader = spark.readStream.format("binaryFile")
            if st.max_files_per_trigger:
                reader = reader.option("maxFilesPerTrigger", str(st.max_files_per_trigger))
        df = reader.schema(_LISTING).option("recursiveFileLookup", "true").load(base)
        streams.append(df.select("path", "length", "modificationTime", F.lit(i).alias(_FEED)))
    return functools.reduce(DataFrame.unionByName, streams)


def _kafka_source(spark: SparkSession, cfg: ShoprecConfig) -> DataFrame:
    k = cfg.stream.kafka
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", k.bootstrap_servers)
        .option("subscribe", k.topic)
        .option("startingOffsets", k.starting_offsets)
    )
    if cfg.stream.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(cfg.stream.max_offsets_per_trigger))
    for key, value in k.options.items():
        reader = reader.option(key, value)
    return reader.load().select("value", "topic", "partition", "offset", "timestamp")


def _take_files(spark: SparkSession, cfg: ShoprecConfig, df: DataFrame, batch: str) -> DataFrame | None:
    """Load a micro-batch of file names into bronze as ``batch``; return (source file, arrival)
    of what it loaded, or None when every file was already loaded by the daily ingest."""
    rows = df.collect()  # one row per file
    paths = [r["path"] for r in rows]
    log_loc = cfg.table("ingest_log")
    delta.ensure_table(spark, log_loc, S.INGEST_LOG_SCHEMA)
    taken = (
        {
            r[0]: r[1]
            for r in delta.read(spark, log_loc)
            .where((F.col(S.SOURCE) == EVENTS) & F.col(S.FILE_PATH).isin(*paths))
            .select(S.FILE_PATH, S.INGEST_BATCH)
            .collect()
        }
        if paths
        else {}
    )
    per_feed: list[list[RawFile]] = [[] for _ in bronze.feed_bases(cfg, EVENTS)]
    for r in rows:
        if taken.get(r["path"], batch) != batch:  # the daily ingest (or another query) has it
            continue
        modified = r["modificationTime"].astimezone(UTC)
        per_feed[r[_FEED]].append(RawFile(r["path"], int(r["length"]), modified))
    skipped = len(rows) - sum(len(fs) for fs in per_feed)
    if skipped:
        log.info("stream batch %s: %d files already loaded by ingest, skipped", batch, skipped)
    if not any(per_feed):
        return None
    result = bronze.ingest_files(spark, cfg, EVENTS, per_feed, batch)
    arrivals = [(f.path, f.modified) for fs in per_feed for f in fs]
    log.debug("stream batch %s: %d files, %d rows", batch, result.files, result.rows)
    schema = f"{S.SOURCE_FILE} string, {ARRIVED} timestamp"
    written = delta.read(spark, cfg.table("bronze_events")).where(F.col(S.INGEST_BATCH) == batch)
    # the reader's file names (``_metadata.file_path``) and the listing's can differ in their
    # scheme's slashes: matched on the path part
    path = F.expr(f"parse_url({S.SOURCE_FILE}, 'PATH')")
    files = spark.createDataFrame(arrivals, schema).withColumn("_p", path)
    return (
        written.select(S.SOURCE_FILE)
        .distinct()
        .withColumn("_p", path)
        .join(files.drop(S.SOURCE_FILE), "_p")
        .drop("_p")
    )


def _take_kafka(spark: SparkSession, cfg: ShoprecConfig, df: DataFrame, batch: str) -> DataFrame | None:
    """Parse a micro-batch of Kafka messages with the raw contract (a value that is not such JSON
    keeps its text in ``_corrupt_record`` and is quarantined by cleaning) and load it into bronze."""
    contract = S.with_corrupt_record(S.RAW_EVENT_SCHEMA)
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": S.CORRUPT_RECORD}
    source = F.format_string("kafka://%s/%d/%d", F.col("topic"), F.col("partition"), F.col("offset"))
    parsed = (
        df.select(
            F.from_json(F.col("value").cast("string"), contract, options).alias("e"),
            F.col("value").cast("string").alias("_value"),
            source.alias(S.SOURCE_FILE),
            F.col("timestamp").alias(ARRIVED),
        )
        .select(
            *[F.col(f"e.{f.name}").alias(f.name) for f in S.RAW_EVENT_SCHEMA.fields],
            # a value that is not a JSON object parses to nothing at all: its text is the record
            F.coalesce(F.col(f"e.{S.CORRUPT_RECORD}"), F.when(F.col("e").isNull(), F.col("_value"))).alias(
                S.CORRUPT_RECORD
            ),
            S.SOURCE_FILE,
            ARRIVED,
        )
        .localCheckpoint()
    )
    if parsed.isEmpty():
        return None
    bronze.write_batch(spark, cfg, EVENTS, parsed.drop(ARRIVED), batch)
    return parsed.select(S.SOURCE_FILE, ARRIVED)


def _ensure_metrics(spark: SparkSession, cfg: ShoprecConfig) -> None:
    delta.ensure_table(spark, cfg.table("stream_metrics"), STREAM_METRICS_SCHEMA)


class Common:
    """The signals every user's candidates share (ALS factors, co-occurrence, popularity, links),
    kept between micro-batches: recomputing them over every interaction for a handful of users
    each batch would cost the batch its minute. They are recomputed every
    ``stream.refresh_minutes``, from the gold tables' versions of that moment, which each batch's
    ``stream_metrics`` row records: a restarted query recomputes them from those same versions
    (Delta time travel), so a replayed batch is scored exactly as the first attempt scored it."""

    def __init__(self, minutes: float) -> None:
        self.minutes = minutes
        self.made = -float("inf")
        self.value: candidates.Shared | None = None
        self.versions: tuple[int, int] | None = None

    def get(
        self, spark: SparkSession, cfg: ShoprecConfig, pinned: tuple[int, int] | None
    ) -> candidates.Shared:
        """The shared signals; ``pinned`` (interactions, items versions) are the last batch's,
        used when this process has none yet."""
        stale = time.monotonic() - self.made > 60 * self.minutes
        if self.value is not None and not stale:
            return self.value
        if self.value is None and pinned is not None:
            versions = pinned
        else:
            versions = (_version(spark, cfg, "gold_interactions"), _version(spark, cfg, "gold_item_features"))
        started = time.perf_counter()
        items = delta.read(spark, cfg.table("gold_item_features"), versions[1])
        interactions = delta.read(spark, cfg.table("gold_interactions"), versions[0])
        self.value = candidates.shared(spark, cfg, items.where(F.col(S.SPLIT) == S.SERVING), interactions)
        self.made, self.versions = time.monotonic(), versions
        log.info(
            "stream: shared signals (ALS, co-occurrence, popularity) of interactions v%d, items v%d in %.1fs",
            *versions,
            time.perf_counter() - started,
        )
        return self.value


def _version(spark: SparkSession, cfg: ShoprecConfig, name: str) -> int:
    row = delta.for_location(spark, cfg.table(name)).history(1).select("version").first()
    return int(row[0]) if row else 0


def _pinned(spark: SparkSession, cfg: ShoprecConfig, query_id: str) -> tuple[int, int] | None:
    """The shared signals' versions the query's last finished batch used."""
    last = (
        delta.read(spark, cfg.table("stream_metrics"))
        .where((F.col("query_id") == query_id) & F.col(SHARED_INTERACTIONS).isNotNull())
        .orderBy(F.desc("epoch"))
        .select(SHARED_INTERACTIONS, SHARED_ITEMS)
        .first()
    )
    return (int(last[0]), int(last[1])) if last else None


def process_batch(
    spark: SparkSession,
    cfg: ShoprecConfig,
    df: DataFrame,
    epoch: int,
    query_id: str,
    common: Common | None = None,
    ensured: bool = False,
) -> BatchResult | None:
    """One micro-batch, from raw rows to re-scored lists (see the module's docstring).
    ``ensured``: the caller made sure the gold and metrics tables exist (:func:`start`, once per
    query: the checks cost a micro-batch about four seconds on 2 cores)."""
    started_at = datetime.now(tz=UTC)
    t0 = time.perf_counter()
    batch = batch_name(query_id, epoch)
    kafka = cfg.stream.source == "kafka"
    arrivals = _take_kafka(spark, cfg, df, batch) if kafka else _take_files(spark, cfg, df, batch)
    steps = {"bronze": time.perf_counter() - t0}
    if arrivals is None:
        return None
    result = BatchResult(batch, epoch)
    mark = time.perf_counter()
    silver = clean_batch(spark, cfg, EVENTS, batch)
    steps["silver"] = time.perf_counter() - mark
    result.input_rows, result.silver_rows = silver.input_rows, silver.silver_rows
    result.quarantined_rows = silver.quarantined_rows
    result.deduplicated_rows = silver.deduplicated_rows
    update = cfg.stream.update
    run_id = None
    versions: tuple[int, int] | None = None
    newest = None
    if update in ("gold", "recommendations") and silver.silver_rows:
        mark = time.perf_counter()
        fold_batch(spark, cfg, batch, ensured=ensured)
        steps["gold"] = time.perf_counter() - mark
    if update == "recommendations" and silver.silver_rows:
        mark = time.perf_counter()
        events = delta.read(spark, cfg.table("silver_events")).where(F.col(S.INGEST_BATCH) == batch)
        raw = delta.read(spark, cfg.table("bronze_events")).where(F.col(S.INGEST_BATCH) == batch)
        newest = (
            events.select(S.USER_KEY, S.EVENT_ID)
            .join(raw.select(S.EVENT_ID, S.SOURCE_FILE).distinct(), S.EVENT_ID)
            .join(arrivals, S.SOURCE_FILE)
            .groupBy(S.USER_KEY)
            .agg(F.max(ARRIVED).alias(ARRIVED))
            .localCheckpoint()
        )
        steps["arrivals"] = time.perf_counter() - mark
        shared = None
        if common is not None:
            mark = time.perf_counter()
            shared = common.get(spark, cfg, _pinned(spark, cfg, query_id) if common.value is None else None)
            versions = common.versions
            steps["shared"] = time.perf_counter() - mark
        mark = time.perf_counter()
        scored = score(spark, cfg, users=newest.select(S.USER_KEY), common=shared)
        steps["score"] = time.perf_counter() - mark
        run_id = result.run_id = scored.run_id
        result.users = scored.users
    finished_at = datetime.now(tz=UTC)
    if newest is not None:
        result.lags = [
            (finished_at - r[0].astimezone(UTC)).total_seconds() for r in newest.select(ARRIVED).collect()
        ]
    result.seconds = time.perf_counter() - t0
    mark = time.perf_counter()
    if not ensured:
        _ensure_metrics(spark, cfg)
    row = (
        batch,
        query_id,
        int(epoch),
        cfg.stream.source,
        started_at,
        finished_at,
        result.input_rows,
        result.silver_rows,
        result.quarantined_rows,
        result.users,
        run_id,
        versions[0] if versions else None,
        versions[1] if versions else None,
        result.lags,
    )
    metrics = spark.createDataFrame([row], STREAM_METRICS_SCHEMA)
    delta.merge_upsert(spark, metrics, cfg.table("stream_metrics"), [S.INGEST_BATCH])
    steps["metrics"] = time.perf_counter() - mark
    result.steps = steps
    lags = sorted(result.lags)
    lag = f", newest event to list p50 {lags[len(lags) // 2]:.1f}s" if lags else ""
    log.info(
        "stream batch %s (epoch %d): %d rows = %d clean + %d quarantined + de-duplicated, %d users "
        "re-scored in %.1fs (%s)%s",
        batch,
        epoch,
        result.input_rows,
        result.silver_rows,
        result.quarantined_rows,
        result.users,
        result.seconds,
        ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()),
        lag,
    )
    return result


@dataclass
class StreamRun:
    """What one ``run`` did (an ``availableNow`` run ends; a ``processingTime`` one is stopped)."""

    batches: list[BatchResult] = field(default_factory=list)
    checkpoint: str = ""


def start(spark: SparkSession, cfg: ShoprecConfig, done: StreamRun | None = None) -> Any:
    """Start the query; returns the ``StreamingQuery``. ``done`` collects each batch's result."""
    st = cfg.stream
    checkpoint = cfg.resolve(st.checkpoint, "stream.checkpoint")
    if st.update == "recommendations":  # fail now, not in the first micro-batch
        from shoprec.serving.lists import resolve_model

        resolve_model(cfg)
    _ensure_metrics(spark, cfg)
    if st.update in ("gold", "recommendations"):
        ensure_gold(spark, cfg)
    source = _kafka_source(spark, cfg) if st.source == "kafka" else _files_source(spark, cfg)
    ids: dict[str, str] = {}
    common = Common(st.refresh_minutes)

    def each(df: DataFrame, epoch: int) -> None:
        if "id" not in ids:
            ids["id"] = _query_id(spark, checkpoint)
        out = process_batch(spark, cfg, df, epoch, ids["id"], common, ensured=True)
        if out is not None and done is not None:
            done.batches.append(out)

    writer = source.writeStream.foreachBatch(each).option("checkpointLocation", checkpoint)
    writer = (
        writer.trigger(availableNow=True)
        if st.trigger == "availableNow"
        else writer.trigger(processingTime=st.interval)
    )
    query = writer.queryName("shoprec-stream").start()
    log.info("stream started: %s source, %s trigger, checkpoint %s", st.source, st.trigger, checkpoint)
    return query


def run(spark: SparkSession, cfg: ShoprecConfig) -> StreamRun:
    """Run the stream until it ends (``availableNow``) or is stopped; a failed micro-batch stops
    it with the batch's own error, one line."""
    from pyspark.errors import StreamingQueryException

    done = StreamRun(checkpoint=cfg.resolve(cfg.stream.checkpoint, "stream.checkpoint"))
    query = start(spark, cfg, done)
    try:
        query.awaitTermination()
    except StreamingQueryException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShoprecError(f"the stream stopped: {first}") from exc
    return done
