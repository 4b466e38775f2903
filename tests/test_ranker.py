"""The ranking head's parts: AUC, the combined score, the loss, and the pair features in Spark."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import torch
from pyspark.sql import SparkSession

from shoprec import schemas as S
from shoprec.config import ObjectiveWeights
from shoprec.training import ranker as rk


def test_auc_matches_hand_computed_cases_and_a_pairwise_count() -> None:
    assert rk.auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert rk.auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert rk.auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # a tie counts half
    assert rk.auc(np.array([1, 1]), np.array([0.5, 0.7])) is None
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounded: plenty of ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert rk.auc(labels, scores) == pytest.approx(pairwise)


def test_combined_score_is_a_weighted_product_of_the_heads() -> None:
    p_click, p_buy, value = np.array([0.5, 0.5]), np.array([0.1, 0.2]), np.array([10.0, 1.0])
    engage = rk.combine(p_click, p_buy, value, ObjectiveWeights(click=1, purchase=0, value=0))
    assert engage[0] == engage[1]
    buy = rk.combine(p_click, p_buy, value, ObjectiveWeights(click=1, purchase=1, value=0))
    assert buy[1] > buy[0]
    revenue = rk.combine(p_click, p_buy, value, ObjectiveWeights(click=1, purchase=1, value=1))
    assert revenue[0] > revenue[1]  # 0.5·0.1·11 > 0.5·0.2·2
    assert np.exp(revenue[0]) == pytest.approx(0.5 * 0.1 * 11)


def test_each_head_learns_its_own_label() -> None:
    torch.manual_seed(0)
    n, dim = 256, 4
    users, items = torch.randn(n, dim), torch.randn(n, dim)
    feats = torch.randn(n, len(rk.FEATURE_NAMES))
    click = (feats[:, 0] > 0).float()  # click depends on one feature, purchase on another
    purchase = (feats[:, 1] > 0).float()
    model = rk.Ranker(dim, len(rk.FEATURE_NAMES), (16,))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        rk.loss(model(users, items, feats), click, purchase).backward()
        opt.step()
    with torch.no_grad():
        logits = model(users, items, feats).numpy()
    assert rk.auc(click.numpy(), logits[:, 0]) > 0.95 and rk.auc(purchase.numpy(), logits[:, 1]) > 0.95
    assert rk.auc(click.numpy(), logits[:, 1]) < 0.7  # the purchase head did not just copy clicks


@pytest.mark.spark
def test_pair_features_in_spark(spark: SparkSession) -> None:
    items = spark.createDataFrame(
        [("i1", "Audio", "Sony", "premium", 50.0, 4.0, 10, 0.2, 20.0, True, 99.0)],
        f"{S.ITEM_ID} string, {S.TOP_CATEGORY} string, {S.BRAND} string, {S.PRICE_BAND} string, "
        f"{S.POPULARITY} double, {S.RATING_MEAN} double, {S.RATING_COUNT} long, "
        f"{S.CONVERSION_RATE} double, {S.DISCOUNT_PCT} double, {S.IN_STOCK} boolean, {S.PRICE} double",
    )
    profiles = spark.createDataFrame(
        [("u1", "budget", [("Audio", 3.0), ("Books", 1.0)], [("Sony", 1.0)])],
        f"{S.USER_KEY} string, {S.PRICE_BAND} string, "
        f"{S.TOP_CATEGORIES} array<struct<name:string,{S.WEIGHT}:double>>, "
        f"{S.TOP_BRANDS} array<struct<name:string,{S.WEIGHT}:double>>",
    )
    pairs = spark.createDataFrame(
        [("u1", "i1", datetime(2026, 1, 1)), ("stranger", "i1", datetime(2026, 1, 1))],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, t timestamp",
    )
    rows = {r[S.USER_KEY]: r for r in rk.pair_features(pairs, items, profiles).collect()}
    f = dict(zip(rk.FEATURE_NAMES, rows["u1"][rk.FEATURES], strict=True))
    assert f["price_band_gap"] == 1.0 and f["price_band_known"] == 1.0  # budget user, premium item
    assert f["category_affinity"] == 0.75 and f["brand_affinity"] == 1.0
    assert f["rating_mean"] == pytest.approx(0.8) and f["has_rating"] == 1.0
    assert f["discount"] == pytest.approx(0.2) and f["in_stock"] == 1.0
    assert f["log_popularity"] == pytest.approx(np.log1p(50.0), rel=1e-6)
    assert rows["u1"][rk.VALUE] == 99.0 and rows["u1"]["t"] == datetime(2026, 1, 1)
    g = dict(zip(rk.FEATURE_NAMES, rows["stranger"][rk.FEATURES], strict=True))
    assert g["price_band_gap"] == 0.5 and g["price_band_known"] == 0.0 and g["category_affinity"] == 0.0
