"""Bring your own data: a shop's own columns, codes and files, mapped by configuration alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig, from_dict, load_config
from shoprec.errors import ShoprecError
from shoprec.etl.bronze import ingest_all
from shoprec.etl.silver import clean_all

pytestmark = pytest.mark.spark
OFFICE = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-office-2014"


def _shop(root: Path) -> ShoprecConfig:
    exports = root / "exports"
    exports.mkdir(parents=True)
    (exports / "clicks_20260105.csv").write_text(
        "ts;visitor;sku;action;amount\n"
        "2026-01-05 10:00:00;V1;A-1;PV;\n"
        "2026-01-05 10:01:00;V1;A-1;BUY;19.5\n"
        "2026-01-05 10:02:00;V2;A-2;WISH;\n"
        "not a time;V2;A-2;PV;\n"
    )
    (exports / "items.jsonl").write_text(
        '{"sku": "A-1", "name": "Blue pen", "cat": ["Office", "Writing", "Pens"], "cost": 19.5, '
        '"changed": 1767225600}\n'
        '{"sku": "A-2", "name": "Red pen", "cat": ["Office", "Writing", "Pens"], "cost": 2.0, '
        '"changed": 1767225600}\n'
    )
    return from_dict(
        {
            "paths": {"root": str(root)},
            "privacy": {"key_env": "SHOPREC_TEST_KEY"},
            "generator": {"enabled": False},
            "sources": {
                "events": [
                    {
                        "path": "${root}/exports/clicks_*.csv",
                        "format": "csv",
                        "options": {"sep": ";", "header": "true"},
                        "schema_ddl": "ts STRING, visitor STRING, sku STRING, action STRING, amount DOUBLE",
                        "columns": {
                            "event_id": "sha2(concat_ws('|', ts, visitor, sku, action), 256)",
                            "event_time": "try_to_timestamp(ts, 'yyyy-MM-dd HH:mm:ss')",
                            "user_id": "visitor",
                            "item_id": "sku",
                            "event_type": "action",
                            "price": "amount",
                            "quantity": "CASE WHEN action = 'BUY' THEN 1 END",
                        },
                        "event_codes": {"PV": "view", "BUY": "purchase"},
                    }
                ],
                "catalog": [
                    {
                        "path": "${root}/exports/items.jsonl",
                        "format": "json",
                        "schema_ddl": "sku STRING, name STRING, cat ARRAY<STRING>, cost DOUBLE, changed LONG",
                        "columns": {
                            "item_id": "sku",
                            "title": "name",
                            "category_path": "array_join(cat, ' > ')",
                            "price": "cost",
                            "updated_at": "timestamp_seconds(changed)",
                        },
                    }
                ],
            },
        }
    )


def test_a_shops_own_format_maps_onto_the_contract(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPREC_TEST_KEY", "k")
    cfg = _shop(tmp_path)
    catalog, events = ingest_all(spark, cfg)
    assert (catalog.rows, events.rows) == (2, 4)
    bronze = delta.read(spark, cfg.table("bronze_events"))
    types = {r[S.USER_ID] + "/" + str(r[S.EVENT_TYPE]) for r in bronze.collect() if r[S.EVENT_TIME]}
    assert types == {"V1/view", "V1/purchase", "V2/WISH"}, "codes renamed; an unmapped code passes as it is"
    results = {r.source: r for r in clean_all(spark, cfg)}
    assert results["events"].by_rule == {"unknown_event_type": 1, "missing_timestamp": 1}
    silver = delta.read(spark, cfg.table("silver_catalog")).where(F.col(S.ITEM_ID) == "A-1").first()
    assert silver is not None and silver[S.CATEGORY_PATH] == "Office > Writing > Pens"


def test_mapping_mistakes_name_the_key(spark: SparkSession, tmp_path: Path) -> None:
    cfg = _shop(tmp_path)
    data = cfg.to_dict()
    data["sources"]["events"][0]["columns"]["colour"] = "'red'"
    with pytest.raises(ShoprecError, match=r"sources\.events\[0\]\.columns: colour not in the raw contract"):
        ingest_all(spark, from_dict(data))
    data["sources"]["events"][0]["columns"].pop("colour")
    data["sources"]["events"][0]["columns"]["user_id"] = "visitor_id"
    with pytest.raises(ShoprecError, match=r"sources\.events\[0\]\.columns\.user_id: 'visitor_id'"):
        ingest_all(spark, from_dict(data))


def test_a_csv_catalog_in_the_contracts_own_columns_reads_without_a_schema(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog's links are lists, which CSV cannot hold: such a feed reads them as empty
    rather than refusing the whole file (found on review after the links joined the contract)."""
    monkeypatch.setenv("SHOPREC_TEST_KEY", "k")
    cfg = _shop(tmp_path)
    names = S.RAW_CATALOG_SCHEMA.fieldNames()
    row = {S.ITEM_ID: "A-3", S.TITLE: "Green pen", S.UPDATED_AT: "2026-01-01 00:00:00"}
    (tmp_path / "exports" / "items.csv").write_text(
        ",".join(names) + "\n" + ",".join(row.get(n, "") for n in names) + "\n"
    )
    data = cfg.to_dict()
    data["sources"]["catalog"] = [
        {"path": "${root}/exports/items.csv", "format": "csv", "options": {"header": "true"}}
    ]
    catalog, _ = ingest_all(spark, from_dict(data))
    assert catalog.rows == 1
    got = delta.read(spark, from_dict(data).table("bronze_catalog")).first()
    assert got is not None and (got[S.ITEM_ID], got[S.TITLE]) == ("A-3", "Green pen")
    assert got[S.COMPLEMENTS] is None and got[S.SUBSTITUTES] is None


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(not OFFICE.is_dir(), reason="the shared Amazon Office data is not beside this checkout")
def test_amazon_office_imports_through_its_config(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPREC_PSEUDONYM_KEY", "office-test")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the config's paths are relative to the checkout
    cfg = load_config("office", [f"paths.root={tmp_path}"])
    catalog, events = ingest_all(spark, cfg)
    assert catalog.rows == 2420
    assert events.rows == 2 * 53258, "every review is a review and a purchase"
    results = {r.source: r for r in clean_all(spark, cfg)}
    assert results["catalog"].silver_rows == 2420 and results["events"].silver_rows == 2 * 53258
    users = delta.read(spark, cfg.table("silver_events")).select(S.USER_KEY).distinct().count()
    assert users == 4905
