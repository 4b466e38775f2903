"""Evaluation end to end on a small generated shop: every baseline writes the recommendations
contract, metrics land per slice and protocol, a re-run replaces its run, the report draws."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from conftest import small_cfg
from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.evaluation import data as eval_data
from shoprec.evaluation.job import evaluate, headline
from shoprec.evaluation.report import write_report

pytestmark = [pytest.mark.spark, pytest.mark.slow]
MODELS = ["popularity", "category_popularity", "recent_popularity", "als", "encoder"]


@pytest.fixture(scope="module")
def gold_cfg(small_shop: ShoprecConfig, tiny_model_dir: Path) -> ShoprecConfig:
    return small_cfg(
        Path(small_shop.paths.root),
        tiny_model_dir,
        evaluation={
            "ks": [5, 10],
            "models": MODELS,
            "als": {"rank": 8, "max_iter": 5},
            "encoder": {"model_path": str(tiny_model_dir), "batch_size": 32},
            "user_block": 64,
            "item_block": 50,
        },
    )


def test_every_baseline_writes_the_contract_and_metrics(spark: SparkSession, gold_cfg: ShoprecConfig) -> None:
    result = evaluate(spark, gold_cfg)
    table = delta.read(spark, gold_cfg.table("recommendations"))
    assert table.schema == S.RECOMMENDATION_SCHEMA
    # the scoring tests share this lake: look at the evaluation's lists only
    recs = table.where(F.col(S.SCENARIO) == "eval:test")
    assert sorted(r[0] for r in recs.select(S.MODEL).distinct().collect()) == sorted(MODELS)
    # ranks run 1..10 without gaps for every user (the catalog has far more than 10 items)
    per_user = recs.groupBy(S.MODEL, S.USER_KEY).agg(F.count(F.lit(1)).alias("n"), F.max(S.RANK).alias("m"))
    assert per_user.where((F.col("n") != 10) | (F.col("m") != 10)).count() == 0
    # nothing the user already bought before the cut is recommended
    data = eval_data.load(spark, gold_cfg)
    assert data.exclude is not None
    assert recs.join(data.exclude, [S.USER_KEY, S.ITEM_ID]).count() == 0
    assert recs.select(S.USER_KEY).distinct().join(data.truth, S.USER_KEY, "left_anti").count() == 0

    rows = result.metrics
    for model in MODELS:
        mine = [r for r in rows if r[S.MODEL] == model]
        rankings = {r[S.RANKING] for r in mine}
        assert rankings == {"full", "sampled:20 drawn"}, rankings
        slices = {r[S.SLICE] for r in mine}
        assert {"all", "cold_items", "warm_items", "light_users", "heavy_users"} <= slices
        assert any(s.startswith("category=") for s in slices)
        for r in mine:
            if r[S.METRIC] not in ("novelty",) and r[S.VALUE] is not None:
                assert 0.0 <= r[S.VALUE] <= 1.0 + 1e-9, r
    metrics = {r[S.METRIC] for r in rows}
    assert {"recall", "ndcg", "mrr", "hit_rate", "precision", "map", "coverage", "novelty"} <= metrics
    assert {"diversity_category", "diversity_embedding", "exposure_gini"} <= metrics

    def value(model: str, metric: str, k: int, slice_: str = "all") -> float:
        return next(
            r[S.VALUE]
            for r in rows
            if (r[S.MODEL], r[S.RANKING], r[S.SLICE], r[S.METRIC], r[S.K])
            == (model, "full", slice_, metric, k)
        )

    # popularity recommends the same items to everyone: low coverage, highest concentration
    assert value("popularity", "coverage", 10) < value("als", "coverage", 10)
    # collaborative filtering cannot reach items without history; the text encoder can
    assert value("als", "recall", 10, "cold_items") == 0.0
    # the synthetic shop has real signal: personalised ALS finds more than chance (10 of the catalog)
    assert value("als", "hit_rate", 10) > 10 / data.catalog_size
    assert "popularity" in headline(rows, (5, 10))


def test_rerun_replaces_its_run_and_the_report_draws(
    spark: SparkSession, gold_cfg: ShoprecConfig, tmp_path: Path
) -> None:
    first = evaluate(spark, gold_cfg, models=["popularity", "als"])
    second = evaluate(spark, gold_cfg, models=["popularity", "als"])
    assert first.run_id == second.run_id
    table = delta.read(spark, gold_cfg.table("eval_metrics")).where(F.col(S.RUN_ID) == first.run_id)
    assert table.count() == len(first.metrics) == len(second.metrics)
    page = write_report(spark, gold_cfg, first.run_id, tmp_path / "r.html").read_text()
    assert page.count("<img") >= 5
    assert "als" in page and "popularity" in page
