"""Bronze → silver: every cleaning rule, reconciliation, pseudonyms, idempotency, increments."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig, from_dict
from shoprec.datagen import defects
from shoprec.datagen.job import generate
from shoprec.etl import rules as R
from shoprec.etl.bronze import ingest_all
from shoprec.etl.pseudonymise import hmac_sha256_hex, pseudonym
from shoprec.etl.silver import Cleaned, clean_all, clean_catalog, clean_events
from shoprec.pipeline import DATA_TABLES

pytestmark = pytest.mark.spark
KEY = b"test-key-not-secret"
NOW = datetime(2026, 2, 1, tzinfo=UTC)


def _cfg(root: Path, **gen: object) -> ShoprecConfig:
    generator = {
        "seed": 3,
        "users": 400,
        "items": 200,
        "days": 10,
        "users_per_block": 200,
        "bad_row_rate": 0.04,
    }
    return from_dict(
        {
            "paths": {"root": str(root)},
            "generator": {**generator, **gen},
            "privacy": {"key_env": "SHOPREC_TEST_KEY"},
            "cleaning": {"bot_events_per_day": 300},
        }
    )


# ---------- one test per rule, on hand-made bronze rows ----------

EVENT_FIELDS = [f.name for f in S.RAW_EVENT_SCHEMA.fields]
T = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def _event(event_id: str | None, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        S.EVENT_ID: event_id,
        S.EVENT_TYPE: S.VIEW,
        S.EVENT_TIME: T,
        S.USER_ID: "cust-1",
        S.SESSION_ID: "s1",
        S.ITEM_ID: "itm-1",
        S.QUERY: None,
        S.PRICE: None,
        S.QUANTITY: None,
        S.RATING: None,
        S.REVIEW_TEXT: None,
        S.CHANNEL: "web",
        S.CORRUPT_RECORD: None,
        S.SOURCE_FILE: "file:/raw/events/x.json",
        S.INGEST_BATCH: "b1",
        S.INGEST_TIME: NOW,
        S.EVENT_DATE: date(2026, 1, 10),
    }
    row.update(kw)
    return row


CASES: dict[str, dict[str, object]] = {
    R.MALFORMED_RECORD: _event(None, **{S.CORRUPT_RECORD: '{"event_id": "e-mal', S.EVENT_TYPE: None}),
    R.MISSING_EVENT_ID: _event(" "),
    R.MISSING_USER_ID: _event("e-nouser", **{S.USER_ID: None}),
    R.UNKNOWN_EVENT_TYPE: _event("e-type", **{S.EVENT_TYPE: "wishlist_add"}),
    R.MISSING_ITEM_ID: _event("e-noitem", **{S.ITEM_ID: None}),
    R.MISSING_TIMESTAMP: _event("e-notime", **{S.EVENT_TIME: None}),
    R.TIMESTAMP_BEFORE_FLOOR: _event("e-1970", **{S.EVENT_TIME: datetime(1970, 1, 1, tzinfo=UTC)}),
    R.FUTURE_TIMESTAMP: _event("e-future", **{S.EVENT_TIME: datetime(2031, 1, 1, tzinfo=UTC)}),
    R.BAD_PRICE: _event("e-price", **{S.EVENT_TYPE: S.PURCHASE, S.PRICE: -3.0, S.QUANTITY: 1}),
    R.BAD_RATING: _event("e-rating", **{S.EVENT_TYPE: S.REVIEW, S.RATING: 6, S.REVIEW_TEXT: "ok"}),
    R.OVERSIZED_TEXT: _event("e-long", **{S.EVENT_TYPE: S.SEARCH, S.ITEM_ID: None, S.QUERY: "x" * 30_000}),
    R.UNDECODABLE_TEXT: _event(
        "e-bytes", **{S.EVENT_TYPE: S.REVIEW, S.RATING: 4, S.REVIEW_TEXT: "gr\ufffdat"}
    ),
    R.UNKNOWN_ITEM: _event("e-ghost", **{S.ITEM_ID: "itm-404"}),
    R.OVERSIZED_ID: _event("e-longid", **{S.USER_ID: "c" * 200_000}),
}
KEPT = [
    _event("e-ok"),
    _event("e-search", **{S.EVENT_TYPE: S.SEARCH, S.ITEM_ID: None, S.QUERY: "trail shoes"}),
    _event("e-emoji", **{S.EVENT_TYPE: S.REVIEW, S.RATING: 5, S.REVIEW_TEXT: "很好 👍 <b>great</b>"}),
]


def _bronze(spark: SparkSession, rows: list[dict[str, object]]) -> DataFrame:
    return spark.createDataFrame(pd.DataFrame(rows), S.BRONZE_EVENT_SCHEMA)


def _catalog(spark: SparkSession, ids: list[str]) -> DataFrame:
    return spark.createDataFrame([(i,) for i in ids], f"{S.ITEM_ID} string")


def _rules_by_key(cleaned: Cleaned) -> dict[str | None, str]:
    return {r[S.ROW_KEY]: r[S.RULE] for r in cleaned.quarantine.collect()}


def test_each_event_rule_quarantines_its_row_with_a_reason(spark: SparkSession, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    rows = [*CASES.values(), *KEPT]
    cleaned = clean_events(_bronze(spark, rows), cfg, _catalog(spark, ["itm-1"]), KEY, NOW)
    quarantine = cleaned.quarantine.collect()
    by_rule = {r[S.RULE]: r for r in quarantine}
    assert set(by_rule) == set(CASES), "each rule caught exactly its own row"
    assert len(quarantine) == len(CASES)
    for rule, row in by_rule.items():
        assert row[S.REASON], rule
        assert row[S.RECORD] and row[S.SOURCE_FILE] == "file:/raw/events/x.json"
    assert by_rule[R.MALFORMED_RECORD][S.RECORD] == '{"event_id": "e-mal', "the original text is kept"
    assert "2031" in by_rule[R.FUTURE_TIMESTAMP][S.REASON]
    assert "-3.0" in by_rule[R.BAD_PRICE][S.REASON]
    assert "wishlist_add" in by_rule[R.UNKNOWN_EVENT_TYPE][S.REASON]
    assert sorted(r[S.EVENT_ID] for r in cleaned.clean.collect()) == ["e-emoji", "e-ok", "e-search"]
    emoji = cleaned.clean.where(F.col(S.EVENT_ID) == "e-emoji").first()
    assert emoji is not None and emoji[S.REVIEW_TEXT] == "很好 👍 <b>great</b>", (
        "CJK, emoji and HTML are kept"
    )
    assert cleaned.reconciled


def test_duplicates_exact_are_dropped_and_conflicting_are_quarantined(
    spark: SparkSession, tmp_path: Path
) -> None:
    rows = [_event("e1"), _event("e1"), _event("e1", **{S.EVENT_TYPE: S.CLICK}), _event("e2")]
    cleaned = clean_events(_bronze(spark, rows), _cfg(tmp_path), _catalog(spark, ["itm-1"]), KEY, NOW)
    assert cleaned.deduplicated_rows == 1
    assert cleaned.by_rule == {R.DUPLICATE_EVENT_ID: 1}
    assert sorted(r[S.EVENT_ID] for r in cleaned.clean.collect()) == ["e1", "e2"]
    assert cleaned.input_rows == 4 and cleaned.reconciled


def test_the_four_rule_gaps_found_through_byod_are_closed(spark: SparkSession, tmp_path: Path) -> None:
    """A purchase without a (parseable) price, a conflicting duplicate whose first row is invalid,
    a user id holding U+FFFD, and a 200,000-character id quoted in a reason."""
    rows = [
        # one event_id, two contents: the invalid row comes first by file, the valid one is kept
        _event("e-dup", **{S.ITEM_ID: "itm-404", S.SOURCE_FILE: "file:/raw/events/a.json"}),
        _event("e-dup", **{S.SOURCE_FILE: "file:/raw/events/b.json"}),
        _event("e-noprice", **{S.EVENT_TYPE: S.PURCHASE, S.QUANTITY: 1}),
        _event("e-cart", **{S.EVENT_TYPE: S.ADD_TO_CART, S.QUANTITY: 1}),
        _event("e-paid", **{S.EVENT_TYPE: S.PURCHASE, S.PRICE: 4.5, S.QUANTITY: 1}),
        _event("e-fffd-1", **{S.USER_ID: "m\ufffdller"}),
        _event("x" * 200_000, **{S.ITEM_ID: "itm-404"}),
    ]
    cfg = _cfg(tmp_path)
    cleaned = clean_events(_bronze(spark, rows), cfg, _catalog(spark, ["itm-1"]), KEY, NOW)
    quarantine = {r[S.ROW_KEY][:12]: r for r in cleaned.quarantine.collect()}
    assert {k: r[S.RULE] for k, r in quarantine.items()} == {
        "e-dup": R.UNKNOWN_ITEM,
        "e-noprice": R.BAD_PRICE,
        "e-cart": R.BAD_PRICE,
        "e-fffd-1": R.UNDECODABLE_TEXT,
        "x" * 12: R.OVERSIZED_ID,
    }
    assert "user_id holds U+FFFD" in quarantine["e-fffd-1"][S.REASON]
    assert len(quarantine["x" * 12][S.REASON]) < 200
    clean = {r[S.EVENT_ID]: r for r in cleaned.clean.collect()}
    assert set(clean) == {"e-dup", "e-paid"} and clean["e-dup"][S.ITEM_ID] == "itm-1"
    assert cleaned.reconciled
    # the same rows in the other order keep the same row
    again = clean_events(_bronze(spark, rows[::-1]), cfg, _catalog(spark, ["itm-1"]), KEY, NOW)
    assert {r[S.EVENT_ID]: r[S.ITEM_ID] for r in again.clean.collect()} == {
        "e-dup": "itm-1",
        "e-paid": "itm-1",
    }
    # a shop whose export has no prices keeps its purchases
    no_prices = from_dict({"paths": {"root": str(tmp_path)}, "cleaning": {"require_price": False}})
    lenient = clean_events(_bronze(spark, rows[2:5]), no_prices, _catalog(spark, ["itm-1"]), KEY, NOW)
    assert lenient.by_rule == {}
    # a reason quotes at most the start of a long value
    long_item = _event("e-longitem", **{S.ITEM_ID: "i" * 200})
    long_type = _event("e-longtype", **{S.EVENT_TYPE: "t" * 5000})
    reason = clean_events(_bronze(spark, [long_item, long_type]), cfg, _catalog(spark, ["itm-1"]), KEY, NOW)
    got = {r[S.RULE]: r[S.REASON] for r in reason.quarantine.collect()}
    assert set(got) == {R.UNKNOWN_ITEM, R.UNKNOWN_EVENT_TYPE}
    assert "(200 characters)" in got[R.UNKNOWN_ITEM] and "(5000 characters)" in got[R.UNKNOWN_EVENT_TYPE]
    assert max(len(v) for v in got.values()) < 256


def test_bot_rule_takes_all_of_a_heavy_users_day(spark: SparkSession, tmp_path: Path) -> None:
    cfg = from_dict({"cleaning": {"bot_events_per_day": 5}})
    bot = [_event(f"b{i}", **{S.USER_ID: "cust-bot"}) for i in range(6)]
    cleaned = clean_events(_bronze(spark, [*bot, _event("h1")]), cfg, _catalog(spark, ["itm-1"]), KEY, NOW)
    assert cleaned.by_rule == {R.BOT_USER: 6}
    assert [r[S.EVENT_ID] for r in cleaned.clean.collect()] == ["h1"]


def _item(item_id: str | None, updated: datetime, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        S.ITEM_ID: item_id,
        S.TITLE: "Pen",
        S.DESCRIPTION: "A pen",
        S.CATEGORY_PATH: "Office > Writing > Pens",
        S.BRAND: "Kalo",
        S.PRICE: 3.5,
        S.CURRENCY: "USD",
        S.STOCK: 4,
        S.DISCOUNT_PCT: 0.0,
        S.LAUNCH_DATE: date(2025, 1, 1),
        S.UPDATED_AT: updated,
        S.COMPLEMENTS: None,
        S.SUBSTITUTES: None,
        S.CORRUPT_RECORD: None,
        S.SOURCE_FILE: "file:/raw/catalog/c.json",
        S.INGEST_BATCH: "c1",
        S.INGEST_TIME: NOW,
    }
    row.update(kw)
    return row


def test_each_catalog_rule_and_latest_version_wins(spark: SparkSession, tmp_path: Path) -> None:
    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC)
    rows = [
        _item("i1", t1, **{S.PRICE: 9.0}),
        _item("i1", t2, **{S.PRICE: 7.0}),  # newer: wins
        _item(None, t1, **{S.TITLE: "No id"}),
        _item("i3", t1, **{S.TITLE: None}),
        _item("i4", t1, **{S.CATEGORY_PATH: ""}),
        _item("i5", t1, **{S.PRICE: 0.0}),
        _item("i6", t1, **{S.DESCRIPTION: "y" * 30_000}),
        _item("i7", t1, **{S.TITLE: "P\ufffdn"}),
        _item(
            "i8",
            t1,
            **{
                S.TITLE: "<b>Füller</b> 万年筆 ✒️",
                S.COMPLEMENTS: [" i1 ", "i8", "", "i1", None],
                S.SUBSTITUTES: [],
            },
        ),
    ]
    bronze = spark.createDataFrame(pd.DataFrame(rows), S.BRONZE_CATALOG_SCHEMA)
    current = spark.createDataFrame([], S.SILVER_CATALOG_SCHEMA)
    cleaned = clean_catalog(bronze, _cfg(tmp_path), current)
    assert _rules_by_key(cleaned) == {
        "i1": R.CONFLICTING_CATALOG_DUPLICATE,
        None: R.MISSING_ITEM_ID,
        "i3": R.MISSING_TITLE,
        "i4": R.MISSING_CATEGORY,
        "i5": R.BAD_PRICE,
        "i6": R.OVERSIZED_TEXT,
        "i7": R.UNDECODABLE_TEXT,
    }
    clean = {r[S.ITEM_ID]: r for r in cleaned.clean.collect()}
    assert set(clean) == {"i1", "i8"} and clean["i1"][S.PRICE] == 7.0
    # the catalog's links: trimmed, once each, without blanks or the item itself; none stays none
    assert clean["i8"][S.COMPLEMENTS] == ["i1"] and clean["i8"][S.SUBSTITUTES] == []
    assert clean["i1"][S.COMPLEMENTS] is None
    assert cleaned.reconciled

    # a version older than what silver already holds is a conflicting duplicate too
    silver = cleaned.clean
    late = spark.createDataFrame(pd.DataFrame([_item("i1", t1, **{S.PRICE: 1.0})]), S.BRONZE_CATALOG_SCHEMA)
    assert clean_catalog(late, _cfg(tmp_path), silver).by_rule == {R.CONFLICTING_CATALOG_DUPLICATE: 1}


def test_hmac_in_spark_matches_python(spark: SparkSession) -> None:
    ids = ["cust-00000001", "ünïcødé-id", "x" * 100]
    df = spark.createDataFrame([(i,) for i in ids], "id string")
    got = [r[0] for r in df.select(hmac_sha256_hex(F.col("id"), KEY)).collect()]
    assert got == [hmac.new(KEY, i.encode(), hashlib.sha256).hexdigest() for i in ids]
    long_key = b"k" * 100  # keys longer than a block are hashed first, as HMAC specifies
    got_long = df.select(hmac_sha256_hex(F.col("id"), long_key)).first()
    assert (
        got_long is not None
        and got_long[0] == hmac.new(long_key, ids[0].encode(), hashlib.sha256).hexdigest()
    )
    other = df.select(pseudonym(F.col("id"), b"another key")).first()
    assert other is not None and other[0] != "u_" + got[0][:32], "a different key, a different pseudonym"


# ---------- the generated shop, end to end through bronze and silver ----------


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> ShoprecConfig:
    import os

    os.environ["SHOPREC_TEST_KEY"] = "module-key"
    cfg = _cfg(tmp_path_factory.mktemp("lake"))
    generate(spark, cfg)
    ingest_all(spark, cfg)
    clean_all(spark, cfg)
    return cfg


def _labels(spark: SparkSession, cfg: ShoprecConfig, kind: str) -> dict[str, str]:
    return {r[0]: r[1] for r in spark.read.parquet(f"{cfg.path('raw')}/_labels/{kind}").collect()}


def test_every_injected_bad_event_lands_in_quarantine_under_its_rule(
    spark: SparkSession, lake: ShoprecConfig
) -> None:
    labels = _labels(spark, lake, "events")
    quarantine = delta.read(spark, lake.table("quarantine_events")).collect()
    got: dict[str, str] = {}
    for r in quarantine:
        key = r[S.ROW_KEY] or re.search(r'"event_id": "([0-9a-f]+)"', r[S.RECORD]).group(1)  # type: ignore[union-attr]
        got[key] = r[S.RULE]
    expected = {k: v for k, v in labels.items() if v != defects.DUPLICATE_EVENT_ID}
    assert got == expected
    silver_ids = {r[0] for r in delta.read(spark, lake.table("silver_events")).select(S.EVENT_ID).collect()}
    assert not silver_ids & set(expected)
    dupes = {k for k, v in labels.items() if v == defects.DUPLICATE_EVENT_ID}
    assert dupes <= silver_ids, "one copy of a resent event is kept"


def test_every_injected_bad_catalog_row_lands_in_quarantine(spark: SparkSession, lake: ShoprecConfig) -> None:
    labels = _labels(spark, lake, "catalog")
    rename = {defects.CATALOG_MISSING_ITEM_ID: R.MISSING_ITEM_ID}
    quarantine = delta.read(spark, lake.table("quarantine_catalog")).collect()
    got = {}
    for r in quarantine:
        if r[S.RULE] == R.CONFLICTING_CATALOG_DUPLICATE:
            updated = re.search(r'"updated_at":"([^"]+)"', r[S.RECORD]).group(1)  # type: ignore[union-attr]
            got[f"{r[S.ROW_KEY]}@{pd.Timestamp(updated).strftime('%Y-%m-%dT%H:%M:%SZ')}"] = r[S.RULE]
        elif r[S.ROW_KEY] is None:
            got[re.search(r'"title":"([^"]+)"', r[S.RECORD]).group(1)] = r[S.RULE]  # type: ignore[union-attr]
        else:
            got[r[S.ROW_KEY]] = r[S.RULE]
    assert got == {k: rename.get(v, v) for k, v in labels.items()}


def test_run_metrics_reconcile(spark: SparkSession, lake: ShoprecConfig) -> None:
    metrics = delta.read(spark, lake.table("run_metrics")).collect()
    assert {m[S.SOURCE] for m in metrics} == {"events", "catalog"}
    for m in metrics:
        assert m[S.RECONCILED]
        assert m[S.INPUT_ROWS] == m[S.SILVER_ROWS] + m[S.QUARANTINED_ROWS] + m[S.DEDUPLICATED_ROWS]
        assert sum(m[S.BY_RULE].values()) == m[S.QUARANTINED_ROWS]
        bronze = delta.read(spark, lake.table(f"bronze_{m[S.SOURCE]}")).where(
            F.col(S.INGEST_BATCH) == m[S.INGEST_BATCH]
        )
        assert bronze.count() == m[S.INPUT_ROWS]


def test_no_raw_user_id_in_silver(spark: SparkSession, lake: ShoprecConfig) -> None:
    raw_ids = {
        r[0]
        for r in delta.read(spark, lake.table("bronze_events")).select(S.USER_ID).distinct().collect()
        if r[0]
    }
    for name in ("silver_events", "silver_catalog"):
        df = delta.read(spark, lake.table(name))
        strings = [f.name for f in df.schema.fields if f.dataType.simpleString() == "string"]
        values = {v for row in df.select(strings).collect() for v in row if v}
        assert not values & raw_ids, name
    keys = delta.read(spark, lake.table("silver_events")).select(S.USER_KEY).distinct().collect()
    assert all(re.fullmatch(r"u_[0-9a-f]{32}", k[0]) for k in keys)


def test_silver_tables_carry_constraints(spark: SparkSession, lake: ShoprecConfig) -> None:
    loc = lake.table("silver_events")
    bad = spark.createDataFrame(
        [("x", S.VIEW, NOW, NOW.date(), "u_1", None, "itm-0000001", None, -1.0, None, None, None, None, "b")],
        S.SILVER_EVENT_SCHEMA,
    )
    with pytest.raises(Exception, match=r"(?i)positive_price"):
        bad.write.format("delta").mode("append").save(loc)
    props = delta.for_location(spark, lake.table("silver_catalog")).detail().first()["properties"]  # type: ignore[index]
    assert props["delta.enableChangeDataFeed"] == "true"


def _snapshot(spark: SparkSession, cfg: ShoprecConfig) -> dict[str, DataFrame]:
    drop = {S.INGEST_TIME, S.QUARANTINED_AT}
    return {n: delta.read(spark, cfg.table(n)).drop(*drop).localCheckpoint() for n in DATA_TABLES}


@pytest.mark.slow
def test_rerun_changes_nothing_and_a_new_day_is_ingested_alone(
    spark: SparkSession, lake: ShoprecConfig
) -> None:
    before = _snapshot(spark, lake)
    assert ingest_all(spark, lake)[1].files == 0
    assert clean_all(spark, lake) == []
    after = _snapshot(spark, lake)
    for name in before:
        assertDataFrameEqual(after[name], before[name])

    # a new export day arrives: only its file is read, and silver grows by its clean rows
    day = Path(lake.path("raw"), "events", "event_date=2026-01-20")
    day.mkdir()
    (day / "part-new.json").write_text(
        '{"event_id": "new-1", "event_type": "view", "event_time": "2026-01-20T10:00:00Z", '
        '"user_id": "cust-00000001", "item_id": "itm-0000001"}\n'
        '{"event_id": "new-2", "event_type": "teleport", "event_time": "2026-01-20T10:00:01Z", '
        '"user_id": "cust-00000001", "item_id": "itm-0000001"}\n'
    )
    result = ingest_all(spark, lake)[1]
    assert (result.files, result.rows) == (1, 2)
    (silver,) = clean_all(spark, lake)
    assert (silver.input_rows, silver.silver_rows, silver.by_rule) == (2, 1, {R.UNKNOWN_EVENT_TYPE: 1})
    assert delta.read(spark, lake.table("silver_events")).count() == before["silver_events"].count() + 1


def test_a_batch_whose_silver_write_dies_stays_pending_and_the_next_run_cleans_it(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run-metrics row marks a batch done, so it is written after silver: a run that dies
    between the quarantine write and the silver MERGE leaves the batch for the next run."""
    import shoprec.etl.silver as silver

    monkeypatch.setenv("SHOPREC_TEST_KEY", "crash-key")
    cfg = _cfg(tmp_path, users=60, items=40, days=3, users_per_block=60)
    generate(spark, cfg)
    ingest_all(spark, cfg)

    def dies(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the driver died here")

    with monkeypatch.context() as m:
        m.setattr(silver, "_merge_silver", dies)
        with pytest.raises(RuntimeError, match="died"):
            clean_all(spark, cfg)
    assert silver.pending_batches(spark, cfg, "catalog"), "the half-written batch is still pending"
    results = clean_all(spark, cfg)
    assert [r.source for r in results] == ["catalog", "events"]
    for r in results:
        assert delta.read(spark, cfg.table(f"silver_{r.source}")).count() == r.silver_rows > 0
    assert silver.pending_batches(spark, cfg, "catalog") == silver.pending_batches(spark, cfg, "events") == []


def test_missing_key_names_the_variable_and_generated_key_is_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoprec.config import PrivacyConfig
    from shoprec.etl.pseudonymise import MissingKeyError, load_key

    monkeypatch.delenv("SHOPREC_PSEUDONYM_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="SHOPREC_PSEUDONYM_KEY"):
        load_key(PrivacyConfig())
    monkeypatch.setenv("SHOPREC_CACHE", str(tmp_path))
    generated = load_key(PrivacyConfig(allow_generated_key=True))
    assert generated == load_key(PrivacyConfig(allow_generated_key=True))
    assert (tmp_path / "secrets" / "pseudonym.key").stat().st_mode & 0o077 == 0, "only the owner may read it"
    monkeypatch.setenv("SHOPREC_PSEUDONYM_KEY", "from-env")
    assert load_key(PrivacyConfig(allow_generated_key=True)) == b"from-env"


@pytest.mark.slow
def test_forget_removes_the_user_everywhere_and_expiry_trims_bronze(
    spark: SparkSession, lake: ShoprecConfig
) -> None:
    from datetime import timedelta

    from shoprec.etl.forget import expire_bronze, forget_user, pseudonym_of
    from shoprec.etl.pseudonymise import load_key

    raw_id = "cust-00000007"
    alias = pseudonym_of(raw_id, load_key(lake.privacy))
    bronze, silver = (
        delta.read(spark, lake.table("bronze_events")),
        delta.read(spark, lake.table("silver_events")),
    )
    n_bronze, n_silver = bronze.count(), silver.count()
    mine_bronze = bronze.where(F.col(S.USER_ID) == raw_id).count()
    mine_silver = silver.where(F.col(S.USER_KEY) == alias).count()
    assert mine_bronze > 0 and mine_silver > 0, "the Spark pseudonym and the Python one agree"

    result = forget_user(spark, lake, raw_id)
    assert result.deleted["bronze_events"] == mine_bronze and result.deleted["silver_events"] == mine_silver
    assert "VACUUM" in result.vacuum_hint
    for name in ("bronze_events", "silver_events", "quarantine_events"):
        df = delta.read(spark, lake.table(name))
        assert (
            df.where(F.col(S.USER_ID if S.USER_ID in df.columns else S.USER_KEY).isin(raw_id, alias)).count()
            == 0
        )
    assert delta.read(spark, lake.table("bronze_events")).count() == n_bronze - mine_bronze
    assert delta.read(spark, lake.table("silver_events")).count() == n_silver - mine_silver

    start = lake.generator.start_date
    today = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(
        days=lake.privacy.bronze_retention_days + 3
    )
    expired = expire_bronze(spark, lake, today=today)
    remaining = delta.read(spark, lake.table("bronze_events")).agg(F.min(S.EVENT_DATE)).first()
    assert expired.deleted["bronze_events"] > 0
    assert (
        remaining is not None
        and remaining[0] >= (today - timedelta(days=lake.privacy.bronze_retention_days)).date()
    )
