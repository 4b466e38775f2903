"""The synthetic shop: deterministic, shaped like a shop, and every injected bad row labelled."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoprec import schemas as S
from shoprec.config import ShoprecConfig, from_dict
from shoprec.datagen import defects, job, shop, vocab
from shoprec.datagen.job import GenerateResult, generate
from shoprec.etl.bronze import read_raw

pytestmark = pytest.mark.spark

GEN = {"seed": 7, "users": 600, "items": 600, "days": 21, "users_per_block": 300, "bad_row_rate": 0.03}


def _cfg(root: Path, **gen: object) -> ShoprecConfig:
    return from_dict({"paths": {"root": str(root)}, "generator": {**GEN, **gen}})


@pytest.fixture(scope="module")
def generated(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ShoprecConfig, GenerateResult]:
    cfg = _cfg(tmp_path_factory.mktemp("gen"))
    return cfg, generate(spark, cfg)


def _events(spark: SparkSession, cfg: ShoprecConfig) -> DataFrame:
    return read_raw(spark, f"{cfg.path('raw')}/events", S.RAW_EVENT_SCHEMA, cfg.generator.format)


def _labels(spark: SparkSession, result: GenerateResult, kind: str) -> dict[str, set[str]]:
    rows = spark.read.parquet(f"{result.labels_dir}/{kind}").collect()
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r[S.DEFECT], set()).add(r[S.ROW_KEY])
    return out


def test_same_seed_same_data_other_seed_other_data(
    spark: SparkSession, generated: tuple[ShoprecConfig, GenerateResult], tmp_path: Path
) -> None:
    cfg, _ = generated
    again = _cfg(tmp_path / "again")
    generate(spark, again)
    cols = [f.name for f in S.RAW_EVENT_SCHEMA.fields] + [S.CORRUPT_RECORD, S.EVENT_DATE]
    assertDataFrameEqual(_events(spark, cfg).select(cols), _events(spark, again).select(cols))
    other = _cfg(tmp_path / "other", seed=8)
    generate(spark, other)
    assert (
        _events(spark, other).select(S.EVENT_ID).exceptAll(_events(spark, cfg).select(S.EVENT_ID)).count() > 0
    )


def test_counts_reconcile_with_the_manifest(
    spark: SparkSession, generated: tuple[ShoprecConfig, GenerateResult]
) -> None:
    cfg, result = generated
    assert _events(spark, cfg).count() == result.event_rows
    manifest = json.loads(Path(cfg.path("raw"), "_manifest.json").read_text())
    assert manifest["result"]["event_rows"] == result.event_rows
    assert manifest["result"]["catalog_rows"] == result.catalog_rows
    assert manifest["generator"]["seed"] == cfg.generator.seed


def test_every_bad_event_is_labelled_and_every_label_is_bad(
    spark: SparkSession, generated: tuple[ShoprecConfig, GenerateResult]
) -> None:
    cfg, result = generated
    g = cfg.generator
    labels = _labels(spark, result, "events")
    raw = _events(spark, cfg).toPandas()
    catalog_ids = set(shop.item_id(np.arange(shop.n_items(g))))

    corrupt = raw[raw[S.CORRUPT_RECORD].notna()]
    ok = raw[raw[S.CORRUPT_RECORD].isna()]
    start = pd.Timestamp(g.start_date, tz="UTC")
    end = start + pd.Timedelta(days=g.days)
    times = pd.to_datetime(ok[S.EVENT_TIME], utc=True)
    text = ok[S.QUERY].fillna("") + ok[S.REVIEW_TEXT].fillna("")
    per_user_day = ok.groupby([S.USER_ID, ok[S.EVENT_TIME].dt.date])[S.EVENT_ID].transform("count")
    ids = ok[S.EVENT_ID]
    detected = {
        defects.MALFORMED_RECORD: {
            re.search(r'"event_id": "([0-9a-f]+)"', t).group(1) for t in corrupt[S.CORRUPT_RECORD]
        },
        defects.DUPLICATE_EVENT_ID: set(ids[ids.duplicated()]),
        defects.UNKNOWN_EVENT_TYPE: set(ids[~ok[S.EVENT_TYPE].isin(S.EVENT_TYPES)]),
        defects.MISSING_USER_ID: set(ids[ok[S.USER_ID].isna()]),
        defects.MISSING_ITEM_ID: set(
            ids[ok[S.ITEM_ID].isna() & ok[S.EVENT_TYPE].ne(S.SEARCH) & ok[S.EVENT_TYPE].isin(S.EVENT_TYPES)]
        ),
        defects.UNKNOWN_ITEM: set(ids[ok[S.ITEM_ID].notna() & ~ok[S.ITEM_ID].isin(catalog_ids)]),
        defects.FUTURE_TIMESTAMP: set(ids[times >= end + pd.Timedelta(days=30)]),
        defects.ANCIENT_TIMESTAMP: set(ids[times < start]),
        defects.BAD_PRICE: set(ids[(ok[S.PRICE] <= 0) | (ok[S.PRICE] > 1e6)]),
        defects.BAD_RATING: set(ids[ok[S.RATING].notna() & ~ok[S.RATING].isin([1, 2, 3, 4, 5])]),
        defects.OVERSIZED_TEXT: set(ids[text.str.len() > 50_000]),
        defects.UNDECODABLE_TEXT: set(ids[text.str.contains(defects.REPLACEMENT)]),
        defects.BOT_USER: set(ids[per_user_day > 400]),
    }
    assert set(labels) <= set(defects.EVENT_DEFECTS)
    for defect in defects.EVENT_DEFECTS:
        assert detected[defect] == labels.get(defect, set()), defect
    for defect in (
        defects.MALFORMED_RECORD,
        defects.DUPLICATE_EVENT_ID,
        defects.UNKNOWN_EVENT_TYPE,
        defects.BOT_USER,
        defects.FUTURE_TIMESTAMP,
    ):
        assert labels.get(defect), f"no {defect} rows were injected at this rate"
    n_labels = sum(len(v) for v in labels.values())
    assert n_labels == result.labelled_event_rows
    assert abs((n_labels - len(labels[defects.BOT_USER])) / result.event_rows - g.bad_row_rate) < 0.01


def test_every_bad_catalog_row_is_labelled(
    spark: SparkSession, generated: tuple[ShoprecConfig, GenerateResult]
) -> None:
    cfg, result = generated
    labels = _labels(spark, result, "catalog")
    cat = read_raw(spark, f"{cfg.path('raw')}/catalog", S.RAW_CATALOG_SCHEMA, "json").toPandas()
    assert cat[S.CORRUPT_RECORD].isna().all()
    newest = cat.groupby(S.ITEM_ID)[S.UPDATED_AT].transform("max")
    stale = cat[cat[S.ITEM_ID].notna() & (cat[S.UPDATED_AT] < newest)]
    detected = {
        defects.STALE_DUPLICATE: {
            f"{i}@{pd.Timestamp(t).strftime('%Y-%m-%dT%H:%M:%SZ')}"
            for i, t in zip(stale[S.ITEM_ID], stale[S.UPDATED_AT], strict=False)
        },
        defects.BAD_PRICE: set(cat.loc[(cat[S.PRICE] <= 0) | (cat[S.PRICE] > 1e6), S.ITEM_ID]),
        defects.MISSING_TITLE: set(cat.loc[cat[S.TITLE].isna(), S.ITEM_ID]),
        defects.CATALOG_MISSING_ITEM_ID: set(cat.loc[cat[S.ITEM_ID].isna(), S.TITLE]),
        defects.OVERSIZED_TEXT: set(cat.loc[cat[S.DESCRIPTION].str.len() > 50_000, S.ITEM_ID]),
        defects.UNDECODABLE_TEXT: set(
            cat.loc[cat[S.TITLE].fillna("").str.contains(defects.REPLACEMENT), S.ITEM_ID]
        ),
    }
    for defect in defects.CATALOG_DEFECTS:
        assert detected[defect] == labels.get(defect, set()), defect
    assert sum(len(v) for v in labels.values()) == result.labelled_catalog_rows > 0


def _clean_events(spark: SparkSession, cfg: ShoprecConfig, result: GenerateResult) -> pd.DataFrame:
    bad = {k for v in _labels(spark, result, "events").values() for k in v}
    raw = _events(spark, cfg).where(F.col(S.CORRUPT_RECORD).isNull()).toPandas()
    return raw[~raw[S.EVENT_ID].isin(bad)]


def test_popularity_is_zipf_like(
    spark: SparkSession, generated: tuple[ShoprecConfig, GenerateResult]
) -> None:
    cfg, result = generated
    ev = _clean_events(spark, cfg, result)
    counts = ev.loc[ev[S.EVENT_TYPE] == S.VIEW, S.ITEM_ID].value_counts().to_numpy()
    ranks = np.arange(1, len(counts) + 1)
    slope = np.polyfit(np.log(ranks[4:100]), np.log(counts[4:100]), 1)[0]
    assert slope == pytest.approx(-cfg.generator.zipf_exponent, abs=0.3)


def test_funnel_rates_and_order(spark: SparkSession, generated: tuple[ShoprecConfig, GenerateResult]) -> None:
    cfg, result = generated
    ev = _clean_events(spark, cfg, result)
    n = ev[S.EVENT_TYPE].value_counts()
    assert n[S.CLICK] / n[S.VIEW] == pytest.approx(shop.P_CLICK, rel=0.2)
    assert n[S.ADD_TO_CART] / n[S.CLICK] == pytest.approx(shop.P_CART, rel=0.2)
    assert n[S.PURCHASE] / n[S.ADD_TO_CART] == pytest.approx(shop.P_PURCHASE, rel=0.2)
    assert 0.5 * shop.P_REVIEW < n[S.REVIEW] / n[S.PURCHASE] <= shop.P_REVIEW * 1.1
    assert n[S.SEARCH] > 0

    # before any defect: every purchase follows an add-to-cart of the same item in the same session
    pure = pd.concat([shop.events_block(cfg.generator, b) for b in range(shop.n_user_blocks(cfg.generator))])
    pure = pure.sort_values(S.EVENT_TIME, kind="stable")
    seen_cart: set[tuple[str, str]] = set()
    for etype, session, item in zip(pure[S.EVENT_TYPE], pure[S.SESSION_ID], pure[S.ITEM_ID], strict=True):
        if etype == S.ADD_TO_CART:
            seen_cart.add((session, item))
        elif etype == S.PURCHASE:
            assert (session, item) in seen_cart


def test_reviews_agree_with_ratings_and_items_launch_before_events(
    spark: SparkSession, generated: tuple[ShoprecConfig, GenerateResult]
) -> None:
    cfg, result = generated
    ev = _clean_events(spark, cfg, result)
    reviews = ev[ev[S.EVENT_TYPE] == S.REVIEW]
    assert set(reviews[S.RATING]) <= {1, 2, 3, 4, 5} and reviews[S.RATING].nunique() >= 4
    for rating, text in zip(reviews[S.RATING], reviews[S.REVIEW_TEXT], strict=False):
        words = vocab.POSITIVE if rating >= 4 else vocab.NEUTRAL if rating == 3 else vocab.NEGATIVE
        assert any(w in text.lower() for w in words), (rating, text)

    cat = read_raw(spark, f"{cfg.path('raw')}/catalog", S.RAW_CATALOG_SCHEMA, "json").toPandas()
    cat = cat[cat[S.ITEM_ID].str.match(r"itm-\d+$", na=False)].drop_duplicates(S.ITEM_ID)
    assert cat[S.CATEGORY_PATH].str.count(" > ").eq(2).all(), "a three-level category tree"
    assert cat[S.BRAND].nunique() > 10 and cat[S.DISCOUNT_PCT].gt(0).any() and cat[S.STOCK].eq(0).any()
    launch = dict(zip(cat[S.ITEM_ID], cat[S.LAUNCH_DATE], strict=False))
    start = cfg.generator.start_date
    assert any(d > start for d in launch.values()), "some items launch during the span (cold start)"
    first_seen = ev.dropna(subset=[S.ITEM_ID]).groupby(S.ITEM_ID)[S.EVENT_TIME].min()
    assert all(t.date() >= launch[i] for i, t in first_seen.items())


@pytest.mark.slow
def test_formats_carry_the_same_rows(spark: SparkSession, tmp_path: Path) -> None:
    frames = {}
    for fmt in ("json", "csv", "parquet"):
        cfg = _cfg(tmp_path / fmt, users=120, items=100, days=7, bad_row_rate=0.0, format=fmt)
        generate(spark, cfg)
        frames[fmt] = _events(spark, cfg).drop(S.SOURCE_FILE)
    assertDataFrameEqual(frames["json"], frames["csv"])
    assertDataFrameEqual(frames["json"], frames["parquet"])


def test_blocks_are_independent_of_each_other() -> None:
    cfg = _cfg(Path("/unused")).generator
    first, second = shop.events_block(cfg, 0), shop.events_block(cfg, 1)
    shop.item_core.cache_clear()  # rebuild the catalog numbers from nothing, as a fresh worker would
    pd.testing.assert_frame_equal(second, shop.events_block(cfg, 1))
    assert not set(first[S.USER_ID]) & set(second[S.USER_ID])


def test_scale_multiplies_users_and_items() -> None:
    cfg = dataclasses.replace(_cfg(Path("/unused")).generator, scale=2.5)
    assert shop.n_users(cfg) == 1500 and shop.n_items(cfg) == 1500
    assert shop.n_user_blocks(cfg) == 5


def test_hex_ids_write_what_a_format_call_writes() -> None:
    values = np.array([[0, 1], [-1, 2**62 + 5], [255, -(2**63)]], dtype=np.int64)
    expected = [f"{a & (2**64 - 1):016x}{c & (2**64 - 1):016x}" for a, c in values.tolist()]
    assert shop.hex_ids(values).tolist() == expected
    assert shop.hex_ids(np.array([10, 2**62 - 1]), prefix="s").tolist() == [
        "s000000000000000a",
        "s3fffffffffffffff",
    ]
    assert shop.hex_ids(np.array([], dtype=np.int64), prefix="s").tolist() == []
    assert shop.hex_ids(np.zeros((0, 2), dtype=np.int64)).tolist() == []


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_exported_rows_match_a_per_row_serialiser(fmt: str) -> None:
    """The column-at-a-time writer gives, row by row, what json.dumps / str of each value gives."""
    cfg = _cfg(Path("/unused"), users=300, format=fmt, bad_row_rate=0.05).generator
    clean = shop.events_block(cfg, 0)
    events, labels = defects.spoil_events(clean, 0.05, np.random.default_rng(3), allow_malformed=True)
    events[S.ROW_KEY], events[S.DEFECT] = "k", "d"
    out = job._serialise(
        events.rename(columns={S.ROW_KEY: job._ROW_KEY_COL, S.DEFECT: job._DEFECT_COL}),
        S.RAW_EVENT_SCHEMA,
        fmt,
        S.EVENT_DATE,
    )
    names = [f.name for f in S.RAW_EVENT_SCHEMA.fields]
    assert len(labels) and events[defects.MALFORMED_FLAG].any()
    for k, rec in enumerate(events[names].itertuples(index=False, name=None)):
        plain = {n: job._plain(v) for n, v in zip(names, rec, strict=True)}
        if fmt == "json":
            line = json.dumps({n: v for n, v in plain.items() if v is not None}, ensure_ascii=False)
            if events[defects.MALFORMED_FLAG].iat[k]:
                line = line[: len(line) // 2]
            assert out[job._LINE].iat[k] == line
        else:
            malformed = events[defects.MALFORMED_FLAG].iat[k]
            for n in names:
                want = "yesterday evening" if malformed and n == S.EVENT_TIME else plain[n]
                assert out[n].iat[k] == (None if want is None else str(want)), (k, n)
