"""Silver → gold: splits without leakage, leave-last-out, negatives, idempotent rebuilds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ConfigError, ShoprecConfig, from_dict
from shoprec.datagen.job import generate
from shoprec.etl.bronze import ingest_all
from shoprec.etl.silver import clean_all
from shoprec.features import gold
from shoprec.features.job import GOLD_TABLES, build_gold

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _cfg(root: Path, mode: str = "time") -> ShoprecConfig:
    return from_dict(
        {
            "paths": {"root": str(root)},
            "generator": {"seed": 5, "users": 300, "items": 150, "days": 12, "users_per_block": 150},
            "privacy": {"key_env": "SHOPREC_TEST_KEY"},
            "features": {"split": {"mode": mode, "valid_days": 2, "test_days": 2}, "eval_negatives": 20},
        }
    )


@pytest.fixture(scope="module")
def silver(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> ShoprecConfig:
    import os

    os.environ["SHOPREC_TEST_KEY"] = "gold-key"
    cfg = _cfg(tmp_path_factory.mktemp("gold"))
    generate(spark, cfg)
    ingest_all(spark, cfg)
    clean_all(spark, cfg)
    build_gold(spark, cfg)
    return cfg


def _table(spark: SparkSession, cfg: ShoprecConfig, name: str, split: str | None = None) -> DataFrame:
    df = delta.read(spark, cfg.table(name))
    return df.where(F.col(S.SPLIT) == split) if split else df


def test_time_split_cuts_and_as_of(spark: SparkSession, silver: ShoprecConfig) -> None:
    start = silver.generator.start_date
    valid_start = datetime(start.year, start.month, start.day) + timedelta(days=silver.generator.days - 4)
    items = _table(spark, silver, "gold_item_features")
    as_of = {r[0]: r[1] for r in items.select(S.SPLIT, S.AS_OF).distinct().collect()}
    assert as_of[S.TRAIN] == as_of[S.VALID] == valid_start
    assert as_of[S.TEST] == valid_start + timedelta(days=2)
    examples = _table(spark, silver, "gold_training_examples")
    bounds = {
        r[0]: (r[1], r[2])
        for r in examples.groupBy(S.SPLIT).agg(F.min(S.TARGET_TIME), F.max(S.TARGET_TIME)).collect()
    }
    assert bounds[S.TRAIN][1] < valid_start <= bounds[S.VALID][0]
    assert bounds[S.VALID][1] < valid_start + timedelta(days=2) <= bounds[S.TEST][0]
    seq_times = (
        _table(spark, silver, "gold_sequences", S.TEST).select(F.explode(S.TIMES)).agg(F.max("col")).first()
    )
    assert seq_times is not None and seq_times[0] < as_of[S.TEST]


def test_item_features_count_only_events_before_the_cut(spark: SparkSession, silver: ShoprecConfig) -> None:
    events = delta.read(spark, silver.table("silver_events"))
    for split in (S.VALID, S.TEST):
        items = _table(spark, silver, "gold_item_features", split)
        as_of = items.select(S.AS_OF).first()[0]  # type: ignore[index]
        expected = (
            events.where((F.col(S.EVENT_TIME) < as_of) & (F.col(S.EVENT_TYPE) == S.VIEW))
            .groupBy(S.ITEM_ID)
            .count()
            .withColumnRenamed("count", S.VIEWS)
        )
        got = items.where(F.col(S.VIEWS) > 0).select(S.ITEM_ID, S.VIEWS)
        assertDataFrameEqual(got, expected.select(S.ITEM_ID, F.col(S.VIEWS).cast("long")))


def test_later_events_do_not_change_earlier_splits(spark: SparkSession, silver: ShoprecConfig) -> None:
    """The leak test: add events in the test period, rebuild, and train/valid features stay the same."""
    before = {
        name: _table(spark, silver, name).where(F.col(S.SPLIT).isin(S.TRAIN, S.VALID)).localCheckpoint()
        for name in ("gold_item_features", "gold_user_profiles", "gold_sequences")
    }
    some = delta.read(spark, silver.table("silver_events")).where(F.col(S.EVENT_TYPE) == S.PURCHASE).limit(50)
    last = delta.read(spark, silver.table("silver_events")).agg(F.max(S.EVENT_TIME)).first()[0]  # type: ignore[index]
    late = (
        some.withColumn(S.EVENT_ID, F.concat(F.lit("late-"), S.EVENT_ID))
        .withColumn(S.EVENT_TIME, F.lit(last) - F.expr("INTERVAL 1 MINUTE"))
        .withColumn(S.EVENT_DATE, F.to_date(S.EVENT_TIME))
    )
    late.write.format("delta").mode("append").save(silver.table("silver_events"))
    assert build_gold(spark, silver, full=True).mode == "full"
    for name, df in before.items():
        after = _table(spark, silver, name).where(F.col(S.SPLIT).isin(S.TRAIN, S.VALID))
        assertDataFrameEqual(after, df)
    test_items = _table(spark, silver, "gold_item_features", S.SERVING).agg(F.sum(S.PURCHASES)).first()
    assert test_items is not None and test_items[0] > 0


def test_negatives_exclude_the_positive_and_are_deterministic(
    spark: SparkSession, silver: ShoprecConfig
) -> None:
    examples = _table(spark, silver, "gold_training_examples")
    assert examples.where(F.array_contains(S.NEGATIVE_ITEMS, F.col(S.POSITIVE_ITEM))).count() == 0
    sizes = {
        r[0]: (r[1], r[2])
        for r in examples.groupBy(S.SPLIT)
        .agg(F.min(F.size(S.NEGATIVE_ITEMS)), F.max(F.size(S.NEGATIVE_ITEMS)))
        .collect()
    }
    assert sizes[S.TRAIN] == (4, 4)
    assert sizes[S.TEST][1] == 20 and sizes[S.TEST][0] >= 15
    assert examples.where(F.size(S.HISTORY_ITEMS) > silver.features.history_length).count() == 0
    catalog = {r[0] for r in delta.read(spark, silver.table("silver_catalog")).select(S.ITEM_ID).collect()}
    negs = {r[0] for r in examples.select(F.explode(S.NEGATIVE_ITEMS)).distinct().collect()}
    assert negs <= catalog


def test_rebuild_is_idempotent(spark: SparkSession, silver: ShoprecConfig) -> None:
    before = {name: _table(spark, silver, name).localCheckpoint() for name in GOLD_TABLES}
    assert build_gold(spark, silver, full=True).mode == "full"
    for name, df in before.items():
        assertDataFrameEqual(_table(spark, silver, name), df)


def test_leave_last_out_holds_out_each_users_last_two_positives(
    spark: SparkSession, silver: ShoprecConfig
) -> None:
    cfg = _cfg(Path(silver.paths.root), mode="leave_last_out")
    events = delta.read(spark, cfg.table("silver_events"))
    periods = gold.with_periods(events, cfg.features, gold.Cuts(None, None))
    examples = gold.training_examples(periods, delta.read(spark, cfg.table("silver_catalog")), cfg.features)
    per_user = examples.groupBy(S.USER_KEY).pivot(S.SPLIT, [S.TRAIN, S.VALID, S.TEST]).count().fillna(0)
    held = per_user.where(F.col(S.TEST) > 0)
    assert held.count() > 0
    assert held.where((F.col(S.TEST) != 1) | (F.col(S.VALID) != 1)).count() == 0
    last_pos = (
        events.where(F.col(S.EVENT_TYPE).isin(*cfg.features.positive_events))
        .groupBy(S.USER_KEY)
        .agg(F.max(S.EVENT_TIME).alias("t"))
    )
    tests = examples.where(F.col(S.SPLIT) == S.TEST).join(last_pos, S.USER_KEY)
    assert tests.where(F.col(S.TARGET_TIME) != F.col("t")).count() == 0


def test_sentiment_lexicon(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("Love it! Excellent.",), ("Disappointed, broke after a week",), ("a pen",)], "t string"
    )
    scores = [r[0] for r in df.select(gold.sentiment(F.col("t"))).collect()]
    assert scores[0] == 1.0 and scores[1] == -1.0 and scores[2] is None


def test_profiles_render_text(spark: SparkSession, silver: ShoprecConfig) -> None:
    profiles = _table(spark, silver, "gold_user_profiles", S.SERVING)
    row = profiles.where(F.size(S.TOP_CATEGORIES) > 0).first()
    assert row is not None
    assert row[S.PROFILE_TEXT].startswith("likes " + row[S.TOP_CATEGORIES][0]["name"])
    assert (
        abs(sum(c[S.WEIGHT] for c in row[S.TOP_CATEGORIES]) - 1.0) < 0.05 or len(row[S.TOP_CATEGORIES]) == 5
    )
    assert datetime.now(tz=UTC).year >= 2026


@pytest.mark.e2e
def test_a_new_day_updates_serving_tables_as_a_full_rebuild_would(
    spark: SparkSession, tmp_path: Path
) -> None:
    import os
    import shutil

    os.environ["SHOPREC_TEST_KEY"] = "gold-key"
    cfg = _cfg(tmp_path / "lake")
    generate(spark, cfg)
    days = sorted((Path(cfg.path("raw")) / "events").glob("event_date=*"))
    held = tmp_path / "held" / days[-1].name
    shutil.move(str(days[-1]), held)
    ingest_all(spark, cfg)
    clean_all(spark, cfg)
    assert build_gold(spark, cfg).mode == "full"
    before = _table(spark, cfg, "gold_sequences", S.TRAIN).localCheckpoint()

    shutil.move(str(held), days[-1])
    ingest_all(spark, cfg)
    clean_all(spark, cfg)
    result = build_gold(spark, cfg)
    assert (result.mode, result.new_batches) == ("incremental", 1)
    serving = {
        "gold_sequences": _table(spark, cfg, "gold_sequences", S.SERVING).localCheckpoint(),
        "gold_user_profiles": _table(spark, cfg, "gold_user_profiles", S.SERVING).localCheckpoint(),
        "gold_item_features": _table(spark, cfg, "gold_item_features", S.SERVING).localCheckpoint(),
        "gold_interactions": _table(spark, cfg, "gold_interactions").localCheckpoint(),
    }
    # the new day reached serving (its events are in some sequence), the training snapshot stayed
    last_day = _table(spark, cfg, "gold_interactions").agg(F.max(S.EVENT_DATE)).first()
    assert last_day is not None
    new_ids = (
        _table(spark, cfg, "gold_interactions").where(F.col(S.EVENT_DATE) == last_day[0]).select(S.EVENT_ID)
    )
    in_sequences = serving["gold_sequences"].select(F.explode(S.EVENT_IDS).alias(S.EVENT_ID))
    assert in_sequences.join(new_ids, S.EVENT_ID, "left_semi").count() > 0
    assertDataFrameEqual(_table(spark, cfg, "gold_sequences", S.TRAIN), before)

    assert build_gold(spark, cfg).mode == "up to date"
    assert build_gold(spark, cfg, full=True).mode == "full"
    for name, df in serving.items():
        split = None if name == "gold_interactions" else S.SERVING
        assertDataFrameEqual(_table(spark, cfg, name, split), df, checkRowOrder=False, rtol=1e-9)


def test_a_user_who_only_searched_gets_a_profile(spark: SparkSession, silver: ShoprecConfig) -> None:
    events = delta.read(spark, silver.table("silver_events"))
    searcher = (
        events.where(F.col(S.EVENT_TYPE) == S.SEARCH).limit(1).withColumn(S.USER_KEY, F.lit("u_only_search"))
    )
    items = _table(spark, silver, "gold_item_features", S.SERVING)
    state = gold.user_state(searcher, items, silver.features)
    row = gold.user_profiles(state, silver.features, S.SERVING, datetime.now()).first()
    assert row is not None
    assert row[S.PRICE_BAND] is None and row[S.TOP_CATEGORIES] == [] and row[S.EVENTS_COUNT] == 1
    assert row[S.PROFILE_TEXT].startswith("searches ")


def test_valid_start_after_test_start_is_a_config_error() -> None:
    f = from_dict({"features": {"split": {"valid_start": "2024-03-10", "test_start": "2024-03-05"}}}).features
    with pytest.raises(ConfigError, match=r"features\.split: valid_start 2024-03-10 is after test_start"):
        gold.time_cuts(f, datetime(2024, 3, 20))
