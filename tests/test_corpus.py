"""A corpus of bad input, 20+ defect classes, through ingest and cleaning: every row accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig, from_dict
from shoprec.etl import rules as R
from shoprec.etl.bronze import ingest_all
from shoprec.etl.silver import clean_all

pytestmark = [pytest.mark.spark, pytest.mark.slow]
DAY = "2026-01-10"
SILVER, DEDUP = "silver", "de-duplicated"


def _line(event_id: str, **kw: object) -> str:
    row: dict[str, object] = {
        "event_id": event_id,
        "event_type": "view",
        "event_time": f"{DAY}T10:00:00Z",
        "user_id": f"cust-{event_id}",
        "session_id": "s1",
        "item_id": "itm-1",
        "channel": "web",
    }
    row.update(kw)
    return json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False)


#: event id → where it must end: silver, de-duplicated, or the quarantine rule.
EXPECTED: dict[str, str] = {}


def _corpus(root: Path) -> ShoprecConfig:
    events = root / "shop" / "events" / f"event_date={DAY}"
    events.mkdir(parents=True)
    lines = {
        "ok-view": (_line("ok-view"), SILVER),
        "ok-cjk-emoji": (
            _line("ok-cjk-emoji", event_type="review", rating=5, review_text="很好 👍 très bien"),
            SILVER,
        ),
        "extra-column": (_line("extra-column", colour="red"), SILVER),
        "dup": (_line("dup"), SILVER),
        "wrong-type": (
            _line("wrong-type", event_type="purchase", price="cheap", quantity=1),
            R.MALFORMED_RECORD,
        ),
        "renamed-column": (_line("renamed-column", user_id=None, userId="cust-9"), R.MISSING_USER_ID),
        "null-user": (
            _line("null-user").replace('"user_id": "cust-null-user"', '"user_id": null'),
            R.MISSING_USER_ID,
        ),
        "missing-keys": (json.dumps({"event_id": "missing-keys", "event_type": "view"}), R.MISSING_USER_ID),
        "unknown-type": (_line("unknown-type", event_type="wishlist_add"), R.UNKNOWN_EVENT_TYPE),
        "negative-price": (
            _line("negative-price", event_type="purchase", price=-5.0, quantity=1),
            R.BAD_PRICE,
        ),
        "absurd-price": (_line("absurd-price", event_type="purchase", price=9.9e12, quantity=1), R.BAD_PRICE),
        "future": (_line("future", event_time="2099-01-01T00:00:00Z"), R.FUTURE_TIMESTAMP),
        "epoch-zero": (_line("epoch-zero", event_time="1970-01-01T00:00:00Z"), R.TIMESTAMP_BEFORE_FLOOR),
        "unknown-item": (_line("unknown-item", item_id="itm-404"), R.UNKNOWN_ITEM),
        "one-mb": (
            _line("one-mb", event_type="review", rating=4, review_text="x" * 1_000_000),
            R.OVERSIZED_TEXT,
        ),
        "bad-rating": (_line("bad-rating", event_type="review", rating=9), R.BAD_RATING),
    }
    body = [text for text, _ in lines.values()] + [lines["dup"][0]]
    body.append('{"event_id": "truncated", "event_type": "vi')  # cut off mid-write
    (events / "part-1.json").write_text("\n".join(body) + "\n", encoding="utf-8")
    # bytes that are not UTF-8 (Latin-1 "café"): Spark's JSON reader rejects the record; it is
    # quarantined as malformed with its text (the bad byte shown as U+FFFD), not dropped
    (events / "part-latin1.json").write_bytes(
        _line("latin1", event_type="search", item_id=None, query="PLACEHOLDER")
        .encode()
        .replace(b"PLACEHOLDER", b"caf\xe9")
        + b"\n"
    )
    (events / "part-empty.json").write_bytes(b"")
    bots = [_line(f"bot-{i}", user_id="cust-bot", event_time=f"{DAY}T11:{i:02d}:00Z") for i in range(12)]
    (events / "part-bot.json").write_text("\n".join(bots) + "\n")
    csv_dir = root / "shop" / "csv" / f"event_date={DAY}"
    csv_dir.mkdir(parents=True)
    header = ",".join(f.name for f in S.RAW_EVENT_SCHEMA.fields)
    (csv_dir / "part.csv").write_text(
        f"{header}\n"
        f"csv-ok,view,{DAY}T12:00:00Z,cust-2,s2,itm-1,,,,,,web\n"
        f"csv-truncated,view,{DAY}T12:00:00Z,cust-2\n"
    )
    catalog = root / "shop" / "catalog"
    catalog.mkdir(parents=True)
    items = [
        {
            "item_id": "itm-1",
            "title": "<b>Pen</b> &amp; cap",
            "category_path": "Office > Writing > Pens",
            "price": 2.0,
            "updated_at": "2026-01-02T00:00:00Z",
        },
        {
            "item_id": "itm-1",
            "title": "Old pen",
            "category_path": "Office > Writing > Pens",
            "price": 1.0,
            "updated_at": "2026-01-01T00:00:00Z",
        },
    ]
    (catalog / "items.json").write_text("\n".join(json.dumps(i) for i in items) + "\n")

    EXPECTED.clear()
    EXPECTED.update({k: v for k, (_, v) in lines.items()})
    EXPECTED.update({"latin1": R.MALFORMED_RECORD, "csv-ok": SILVER, "csv-truncated": R.MALFORMED_RECORD})
    EXPECTED.update({f"bot-{i}": R.BOT_USER for i in range(12)})
    feed = {"format": "json"}
    return from_dict(
        {
            "paths": {"root": str(root)},
            "generator": {"enabled": False},
            "privacy": {"key_env": "SHOPREC_TEST_KEY"},
            "cleaning": {"bot_events_per_day": 10, "max_text_chars": 100_000},
            "sources": {
                "events": [
                    {**feed, "path": "${root}/shop/events"},
                    {"format": "csv", "options": {"header": "true"}, "path": "${root}/shop/csv"},
                ],
                "catalog": [{**feed, "path": "${root}/shop/catalog"}],
            },
        }
    )


def _fates(spark: SparkSession, cfg: ShoprecConfig) -> dict[str, str]:
    """Event id → where it landed: silver, or the rule that quarantined it (each with a reason)."""
    fate: dict[str, str] = {}
    for r in delta.read(spark, cfg.table("quarantine_events")).collect():
        key = r[S.ROW_KEY]
        if key is None:  # malformed: the id is in the original text
            key = "truncated" if '"truncated"' in r[S.RECORD] else r[S.RECORD].split(",")[0].split('"')[-2]
        fate[key] = r[S.RULE]
        assert r[S.REASON] and r[S.RECORD]
    for row in delta.read(spark, cfg.table("silver_events")).select(S.EVENT_ID).collect():
        fate[row[0]] = SILVER
    return fate


def test_every_bad_row_is_accounted_for(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPREC_TEST_KEY", "corpus")
    cfg = _corpus(tmp_path)
    catalog, events = ingest_all(spark, cfg)
    assert events.files == 5, "the empty file is listed and recorded too"
    results = {r.source: r for r in clean_all(spark, cfg)}
    ev = results["events"]
    assert ev.input_rows == len(EXPECTED) + 2  # + the exact duplicate and the truncated JSON line
    assert ev.input_rows == ev.silver_rows + ev.quarantined_rows + ev.deduplicated_rows
    assert ev.deduplicated_rows == 1

    assert _fates(spark, cfg) == {**EXPECTED, "truncated": R.MALFORMED_RECORD}
    kept = delta.read(spark, cfg.table("silver_events")).where(F.col(S.EVENT_ID) == "ok-cjk-emoji").first()
    assert kept is not None and kept[S.REVIEW_TEXT] == "很好 👍 très bien"
    item = delta.read(spark, cfg.table("silver_catalog")).first()
    assert item is not None and item[S.TITLE] == "<b>Pen</b> &amp; cap", (
        "HTML is text: kept as it is, newest wins"
    )
    assert results["catalog"].by_rule == {R.CONFLICTING_CATALOG_DUPLICATE: 1}
    assert catalog.rows == 2


@pytest.mark.e2e
def test_the_corpus_through_the_stream_lands_as_in_batch(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same files, arriving in the events feeds' folders while ``shoprec stream`` runs (one
    micro-batch per file): every row lands where the batch path puts it, each batch reconciled."""
    import dataclasses

    from shoprec.etl.bronze import CATALOG, EVENTS, ingest
    from shoprec.etl.silver import clean_batch
    from shoprec.streaming.job import run

    monkeypatch.setenv("SHOPREC_TEST_KEY", "corpus")
    cfg = _corpus(tmp_path)
    stream = dataclasses.replace(cfg.stream, trigger="availableNow", max_files_per_trigger=1, update="silver")
    cfg = dataclasses.replace(cfg, stream=stream)
    catalog = ingest(spark, cfg, CATALOG)
    assert catalog.batch_id is not None
    clean_batch(spark, cfg, CATALOG, catalog.batch_id)
    done = run(spark, cfg)
    # how the two feeds' files fall into micro-batches is Spark's timing; every batch reconciles,
    # and Spark makes no split of an empty file, so it is never handed over (it holds no row)
    assert 2 <= len(done.batches) <= 5
    files = delta.read(spark, cfg.table("ingest_log")).where(F.col(S.SOURCE) == "events")
    assert sorted(Path(r[0]).name for r in files.select(S.FILE_PATH).collect()) == [
        "part-1.json", "part-bot.json", "part-latin1.json", "part.csv"
    ]  # fmt: skip
    assert all(b.input_rows == b.silver_rows + b.quarantined_rows + b.deduplicated_rows for b in done.batches)
    assert sum(b.input_rows for b in done.batches) == len(EXPECTED) + 2
    assert _fates(spark, cfg) == {**EXPECTED, "truncated": R.MALFORMED_RECORD}
    metrics = delta.read(spark, cfg.table("run_metrics")).where(F.col(S.SOURCE) == "events")
    assert metrics.where(~F.col(S.RECONCILED)).count() == 0 and metrics.count() == len(done.batches)
    assert run(spark, cfg).batches == [], "restarted with nothing new: nothing happens"
    # the daily ingest skips what the stream loaded, and the stream what the daily ingest loaded
    again = ingest(spark, cfg, EVENTS)
    assert again.rows == 0 and again.files == 1, "only the empty file, which no stream is handed"
    late = tmp_path / "shop" / "events" / f"event_date={DAY}" / "part-late.json"
    late.write_text(_line("late") + "\n")
    assert ingest(spark, cfg, EVENTS).files == 1
    assert run(spark, cfg).batches == []
    assert delta.read(spark, cfg.table("bronze_events")).where(F.col(S.EVENT_ID) == "late").count() == 1
