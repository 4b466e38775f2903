"""Bronze → silver: clean, de-duplicate, pseudonymise; reject to quarantine with a reason; reconcile.

For each ingest batch: exact duplicate rows are dropped (counted), the cleaning rules of
:mod:`shoprec.etl.rules` route every bad row to a quarantine table with the rule, the reason and
the original row, and clean rows are merged into silver on their key. Before anything is written
the batch must reconcile: input = silver + quarantined + de-duplicated, or the job fails. Each
run's counts go to the run-metrics table. Writes are keyed (MERGE) or replace the batch's own
rows (replaceWhere), so re-running a batch leaves every table as it was.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.etl import rules as R
from shoprec.etl.bronze import CATALOG, EVENTS
from shoprec.etl.pseudonymise import load_key, pseudonym

log = logging.getLogger(__name__)
_DUP_RANK = "_dup_rank"
_CATALOG_RANK = "_version_rank"
_NEWEST = "_newest_updated_at"


class ReconciliationError(ShoprecError):
    """Rows in and rows out of a cleaning run do not add up: something would be lost."""


@dataclass(frozen=True)
class Cleaned:
    """One batch split three ways, plus its counts (computed once, from a persisted frame)."""

    clean: DataFrame
    quarantine: DataFrame
    #: The persisted frame both are cut from; unpersisted once they are written.
    ruled: DataFrame
    input_rows: int
    clean_rows: int
    deduplicated_rows: int
    by_rule: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined_rows(self) -> int:
        return sum(self.by_rule.values())

    @property
    def reconciled(self) -> bool:
        return self.input_rows == self.clean_rows + self.quarantined_rows + self.deduplicated_rows


def _record_json(contract: list[str]) -> Column:
    """The original row: the text of a malformed record, else the parsed fields as JSON."""
    return F.coalesce(F.col(S.CORRUPT_RECORD), F.to_json(F.struct(*[F.col(c) for c in contract])))


def _quarantine(df: DataFrame, contract: list[str], key: str) -> DataFrame:
    user = F.col(S.USER_ID) if S.USER_ID in contract else F.lit(None).cast("string")
    return df.where(F.col(R.RULE_COL).isNotNull()).select(
        F.col(R.RULE_COL).alias(S.RULE),
        F.col(R.REASON_COL).alias(S.REASON),
        F.col(key).alias(S.ROW_KEY),
        user.alias(S.USER_ID),
        _record_json(contract).alias(S.RECORD),
        F.col(S.SOURCE_FILE),
        F.col(S.INGEST_BATCH),
        F.current_timestamp().alias(S.QUARANTINED_AT),
    )


def _split(ruled: DataFrame, clean: DataFrame, quarantine: DataFrame, input_rows: int) -> Cleaned:
    ruled.persist(StorageLevel.MEMORY_AND_DISK)
    counts = {r[0]: int(r[1]) for r in ruled.groupBy(R.RULE_COL).count().collect()}
    kept = counts.pop(None, 0)
    total = kept + sum(counts.values())
    return Cleaned(clean, quarantine, ruled, input_rows, kept, input_rows - total, counts)


def clean_events(
    bronze: DataFrame, cfg: ShoprecConfig, catalog_items: DataFrame, key: bytes, now: datetime
) -> Cleaned:
    """Split a batch of bronze events into silver rows and quarantined rows (nothing is written)."""
    contract = [f.name for f in S.RAW_EVENT_SCHEMA.fields]
    input_rows = bronze.count()
    distinct = bronze.dropDuplicates([*contract, S.CORRUPT_RECORD])  # resent identical rows
    user_day = Window.partitionBy(S.USER_ID, F.to_date(S.EVENT_TIME))
    known = catalog_items.select(F.col(S.ITEM_ID).alias("_catalog_item")).distinct()
    enriched = (
        distinct.withColumn(R.USER_DAY_EVENTS, F.count(F.lit(1)).over(user_day))
        .join(F.broadcast(known), F.col(S.ITEM_ID) == F.col("_catalog_item"), "left")
        .withColumn(R.KNOWN_ITEM, F.col("_catalog_item").isNotNull())
        .drop("_catalog_item")
    )
    pre = R.apply_rules(enriched, R.event_rules(cfg.cleaning, now))
    # of the rows sharing one event_id with different content, a valid one is kept (a row that
    # breaks a rule goes under that rule, never kept over a valid one), the same one on every run:
    # by content (not by file: which file's copy of a resent row survived the de-duplication above
    # is arbitrary)
    by_id = Window.partitionBy(S.EVENT_ID).orderBy(
        F.col(R.RULE_COL).isNotNull(),
        S.EVENT_TIME,
        S.EVENT_TYPE,
        S.USER_ID,
        F.xxhash64(*contract, S.CORRUPT_RECORD),
        S.SOURCE_FILE,
    )
    duplicate = F.col(R.RULE_COL).isNull() & F.col(S.EVENT_ID).isNotNull() & (F.row_number().over(by_id) > 1)
    ruled = (
        pre.withColumn(_DUP_RANK, duplicate)
        .withColumn(
            R.RULE_COL, F.when(F.col(_DUP_RANK), F.lit(R.DUPLICATE_EVENT_ID)).otherwise(F.col(R.RULE_COL))
        )
        .withColumn(
            R.REASON_COL,
            F.when(
                F.col(_DUP_RANK),
                F.format_string(
                    "event_id %s already seen in this batch with other content", R.shown(F.col(S.EVENT_ID))
                ),
            ).otherwise(F.col(R.REASON_COL)),
        )
        .drop(_DUP_RANK)
    )
    clean = ruled.where(F.col(R.RULE_COL).isNull()).select(
        S.EVENT_ID,
        S.EVENT_TYPE,
        S.EVENT_TIME,
        F.to_date(S.EVENT_TIME).alias(S.EVENT_DATE),
        pseudonym(F.col(S.USER_ID), key).alias(S.USER_KEY),
        S.SESSION_ID,
        S.ITEM_ID,
        S.QUERY,
        S.PRICE,
        S.QUANTITY,
        S.RATING,
        S.REVIEW_TEXT,
        S.CHANNEL,
        S.INGEST_BATCH,
    )
    return _split(ruled, clean, _quarantine(ruled, contract, S.EVENT_ID), input_rows)


def clean_catalog(bronze: DataFrame, cfg: ShoprecConfig, current: DataFrame) -> Cleaned:
    """Split a batch of bronze catalog rows: the newest valid version of each item goes to silver.

    Older versions, in this batch or older than what silver already holds, are quarantined as
    conflicting duplicates; a version identical to silver's is the same row again and is kept.
    """
    contract = [f.name for f in S.RAW_CATALOG_SCHEMA.fields]
    input_rows = bronze.count()
    distinct = bronze.dropDuplicates([*contract, S.CORRUPT_RECORD])
    valid = R.catalog_rules(cfg.cleaning)
    pre = R.apply_rules(distinct, valid)
    newest_here = Window.partitionBy(S.ITEM_ID).orderBy(
        F.col(S.UPDATED_AT).desc(), F.xxhash64(*contract).desc()
    )
    silver_now = current.select(F.col(S.ITEM_ID).alias("_cur_item"), F.col(S.UPDATED_AT).alias(_NEWEST))
    ranked = (
        pre.withColumn(
            _CATALOG_RANK,
            F.when(F.col(R.RULE_COL).isNull(), F.row_number().over(newest_here)).otherwise(F.lit(None)),
        )
        .join(silver_now, F.col(S.ITEM_ID) == F.col("_cur_item"), "left")
        .drop("_cur_item")
    )
    superseded = R.Rule(
        R.CONFLICTING_CATALOG_DUPLICATE,
        (F.col(_CATALOG_RANK) > 1) | (F.col(S.UPDATED_AT) < F.col(_NEWEST)),
        F.format_string(
            "item %s has a newer version than this one (updated_at %s)",
            R.shown(F.col(S.ITEM_ID)),
            F.col(S.UPDATED_AT).cast("string"),
        ),
    )
    ruled = ranked.withColumn(
        R.RULE_COL, F.coalesce(F.col(R.RULE_COL), F.when(superseded.rejects, F.lit(superseded.name)))
    ).withColumn(R.REASON_COL, F.coalesce(F.col(R.REASON_COL), F.when(superseded.rejects, superseded.reason)))
    clean = ruled.where(F.col(R.RULE_COL).isNull()).select(
        *[_links(f.name) if f.name in S.RELATIONS else F.col(f.name) for f in S.SILVER_CATALOG_SCHEMA.fields]
    )
    return _split(ruled, clean, _quarantine(ruled, contract, S.ITEM_ID), input_rows)


def _links(name: str) -> Column:
    """A relation list as serving reads it: trimmed ids, once each, without blanks or the item
    itself (exports write "[]" and "a, b" alike; a link to itself says nothing). Links to items
    the catalog lacks stay: the item may arrive in a later batch, and readers join on the catalog."""
    ids = F.transform(F.col(name), lambda x: F.trim(x))
    kept = F.filter(ids, lambda x: x.isNotNull() & (x != "") & (x != F.col(S.ITEM_ID)))
    return F.array_distinct(kept).alias(name)


@dataclass(frozen=True)
class SilverResult:
    source: str
    batch_id: str
    input_rows: int
    silver_rows: int
    quarantined_rows: int
    deduplicated_rows: int
    by_rule: dict[str, int]


def _ensure_tables(spark: SparkSession, cfg: ShoprecConfig) -> None:
    delta.ensure_table(
        spark, cfg.table("silver_events"), S.SILVER_EVENT_SCHEMA, [S.EVENT_DATE], checks=S.SILVER_EVENT_CHECKS
    )
    delta.ensure_table(
        spark,
        cfg.table("silver_catalog"),
        S.SILVER_CATALOG_SCHEMA,
        checks=S.SILVER_CATALOG_CHECKS,
        properties={"delta.enableChangeDataFeed": "true"},
    )
    for source in (EVENTS, CATALOG):
        delta.ensure_table(spark, cfg.table(f"quarantine_{source}"), S.QUARANTINE_SCHEMA, [S.RULE])
    delta.ensure_table(spark, cfg.table("run_metrics"), S.RUN_METRICS_SCHEMA)


def _write_metrics(spark: SparkSession, cfg: ShoprecConfig, source: str, batch: str, c: Cleaned) -> None:
    row = (
        "silver",
        source,
        batch,
        uuid.uuid4().hex[:12],
        datetime.now(tz=UTC),
        c.input_rows,
        c.clean_rows,
        c.quarantined_rows,
        c.deduplicated_rows,
        c.by_rule,
        c.reconciled,
    )
    delta.merge_upsert(
        spark,
        spark.createDataFrame([row], S.RUN_METRICS_SCHEMA),
        cfg.table("run_metrics"),
        [S.STAGE, S.SOURCE, S.INGEST_BATCH],
    )


def _merge_silver(
    spark: SparkSession, df: DataFrame, location: str, keys: list[str], newer_only: str | None = None
) -> None:
    target = delta.for_location(spark, location)
    cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    merge = target.alias("t").merge(df.alias("s"), cond)
    merge = merge.whenMatchedUpdateAll(condition=newer_only) if newer_only else merge.whenMatchedUpdateAll()
    merge.whenNotMatchedInsertAll().execute()
    log.info("MERGE into %s: %s", location, delta.last_operation_metrics(spark, location) or "no change")


def pending_batches(spark: SparkSession, cfg: ShoprecConfig, source: str) -> list[str]:
    """Ingest batches of ``source`` that have not been cleaned yet, oldest first."""
    done = (
        delta.read(spark, cfg.table("run_metrics"))
        .where((F.col(S.STAGE) == "silver") & (F.col(S.SOURCE) == source) & F.col(S.RECONCILED))
        .select(S.INGEST_BATCH)
    )
    batches = (
        delta.read(spark, cfg.table("ingest_log"))
        .where(F.col(S.SOURCE) == source)
        .groupBy(S.INGEST_BATCH)
        .agg(F.min(S.INGEST_TIME).alias("t"))
        .join(done, S.INGEST_BATCH, "left_anti")
        .orderBy("t")
        .collect()
    )
    return [r[0] for r in batches]


def clean_batch(
    spark: SparkSession, cfg: ShoprecConfig, source: str, batch: str, now: datetime | None = None
) -> SilverResult:
    """Clean one ingest batch of ``source`` into silver and quarantine, reconciled and recorded."""
    _ensure_tables(spark, cfg)
    return _clean_batch(spark, cfg, source, batch, now or datetime.now(tz=UTC))


def _clean_batch(
    spark: SparkSession, cfg: ShoprecConfig, source: str, batch: str, now: datetime
) -> SilverResult:
    started = time.perf_counter()
    bronze = delta.read(spark, cfg.table(f"bronze_{source}")).where(F.col(S.INGEST_BATCH) == batch)
    if source == EVENTS:
        catalog = delta.read(spark, cfg.table("silver_catalog"))
        cleaned = clean_events(bronze, cfg, catalog, load_key(cfg.privacy), now)
    else:
        cleaned = clean_catalog(bronze, cfg, delta.read(spark, cfg.table("silver_catalog")))
    if not cleaned.reconciled:
        _write_metrics(spark, cfg, source, batch, cleaned)  # the failed count, for the operator
        raise ReconciliationError(
            f"{source} batch {batch}: {cleaned.input_rows} rows in, but {cleaned.clean_rows} clean + "
            f"{cleaned.quarantined_rows} quarantined + {cleaned.deduplicated_rows} de-duplicated; "
            "nothing written"
        )
    delta.replace_where(
        cleaned.quarantine, cfg.table(f"quarantine_{source}"), f"{S.INGEST_BATCH} = '{batch}'"
    )
    if source == EVENTS:
        _merge_silver(spark, cleaned.clean, cfg.table("silver_events"), [S.EVENT_DATE, S.EVENT_ID])
    else:
        _merge_silver(
            spark,
            cleaned.clean,
            cfg.table("silver_catalog"),
            [S.ITEM_ID],
            newer_only=f"s.{S.UPDATED_AT} > t.{S.UPDATED_AT}",
        )
    # Last: a reconciled row in run_metrics is what marks the batch done (``pending_batches``), so
    # it may only exist once quarantine and silver hold the batch. Written first, a run killed
    # before the silver MERGE left a batch that every later run skipped, its clean rows lost.
    _write_metrics(spark, cfg, source, batch, cleaned)
    cleaned.ruled.unpersist()
    result = SilverResult(
        source,
        batch,
        cleaned.input_rows,
        cleaned.clean_rows,
        cleaned.quarantined_rows,
        cleaned.deduplicated_rows,
        dict(sorted(cleaned.by_rule.items())),
    )
    log.info(
        "silver %s batch %s: %d in = %d clean + %d quarantined + %d de-duplicated (%.1fs); quarantine: %s",
        source,
        batch,
        result.input_rows,
        result.silver_rows,
        result.quarantined_rows,
        result.deduplicated_rows,
        time.perf_counter() - started,
        result.by_rule,
    )
    return result


def clean_all(spark: SparkSession, cfg: ShoprecConfig) -> list[SilverResult]:
    """Clean every pending batch: the catalog first, since events are checked against it."""
    _ensure_tables(spark, cfg)
    results = []
    for source in (CATALOG, EVENTS):
        for batch in pending_batches(spark, cfg, source):
            results.append(_clean_batch(spark, cfg, source, batch, datetime.now(tz=UTC)))
    return results
