"""Right to erasure and retention: remove one user's rows from every table, or expired raw rows.

A user's raw id lives only in bronze and quarantine; everywhere else they are their pseudonym.
``forget_user`` deletes by raw id where a table has ``user_id`` and by pseudonym where it has
``user_key``, in every table the configuration names. Delta keeps deleted rows in older table
versions until VACUUM removes the files, so the result says how to make the removal physical.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.etl.pseudonymise import load_key

log = logging.getLogger(__name__)


def pseudonym_of(raw_id: str, key: bytes) -> str:
    """The same pseudonym Spark computes (``shoprec.etl.pseudonymise.pseudonym``), in Python."""
    return "u_" + hmac.new(key, raw_id.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class ForgetResult:
    deleted: dict[str, int] = field(default_factory=dict)
    vacuum_hint: str = ""


def _delete(spark: SparkSession, location: str, condition: Column) -> int:
    table = delta.for_location(spark, location)
    table.delete(condition)
    return int(delta.last_operation_metrics(spark, location).get("numDeletedRows", "0"))


def _vacuum_hint(locations: list[str]) -> str:
    names = ", ".join(delta.sql_name(loc) for loc in locations)
    return (
        "Deleted rows stay in older Delta versions until their files are vacuumed. To remove them "
        f"physically, once the retention window has passed run VACUUM on: {names} "
        "(VACUUM <table> RETAIN 168 HOURS; shorter windows need "
        "spark.databricks.delta.retentionDurationCheck.enabled=false)."
    )


def forget_user(spark: SparkSession, cfg: ShoprecConfig, raw_user_id: str) -> ForgetResult:
    """Delete every row of one user, by raw id and by pseudonym, from every configured table."""
    key = load_key(cfg.privacy)
    alias = pseudonym_of(raw_user_id, key)
    deleted: dict[str, int] = {}
    for name in sorted(cfg.tables):
        location = cfg.table(name)
        if not delta.exists(spark, location):
            continue
        columns = set(delta.read(spark, location).columns)
        conditions = []
        if S.USER_ID in columns:
            conditions.append(F.col(S.USER_ID) == raw_user_id)
        if S.USER_KEY in columns:
            conditions.append(F.col(S.USER_KEY) == alias)
        if S.RECORD in columns:  # a quarantined record that did not parse may still hold the id
            conditions.append(F.col(S.RECORD).contains(f'"{raw_user_id}"'))
        if not conditions:
            continue
        condition = conditions[0]
        for c in conditions[1:]:
            condition = condition | c
        deleted[name] = _delete(spark, location, condition)
    log.info("forgot one user: rows deleted per table %s", deleted)  # neither id is logged
    touched = [cfg.table(n) for n, rows in deleted.items() if rows]
    return ForgetResult(deleted, _vacuum_hint(touched) if touched else "")


def expire_bronze(spark: SparkSession, cfg: ShoprecConfig, today: datetime | None = None) -> ForgetResult:
    """Delete raw rows older than ``privacy.bronze_retention_days`` from bronze and quarantine."""
    today = today or datetime.now(tz=UTC)
    cutoff = (today - timedelta(days=cfg.privacy.bronze_retention_days)).date()
    deleted: dict[str, int] = {}
    targets = {
        "bronze_events": F.col(S.EVENT_DATE) < F.lit(cutoff),
        "bronze_catalog": F.to_date(S.INGEST_TIME) < F.lit(cutoff),
        "quarantine_events": F.to_date(S.QUARANTINED_AT) < F.lit(cutoff),
        "quarantine_catalog": F.to_date(S.QUARANTINED_AT) < F.lit(cutoff),
    }
    for name, condition in targets.items():
        if name in cfg.tables and delta.exists(spark, cfg.table(name)):
            deleted[name] = _delete(spark, cfg.table(name), condition)
    log.info("expired raw rows before %s: %s", cutoff, deleted)
    touched = [cfg.table(n) for n, rows in deleted.items() if rows]
    return ForgetResult(deleted, _vacuum_hint(touched) if touched else "")
