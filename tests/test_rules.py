"""Each business rule on its own, on one user's hand-made candidates (no Spark needed)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from shoprec import schemas as S
from shoprec.config import ObjectiveWeights, ScenarioConfig
from shoprec.scoring import rules as R
from shoprec.training import ranker as rk

PLAIN = ScenarioConfig(
    name="t",
    k=10,
    drop_out_of_stock=False,
    exclude_bought=False,
    price_affinity=0.0,
    promotion_boost=0.0,
    diversity="none",
    weights=ObjectiveWeights(click=1.0, purchase=0.0, value=0.0),
)


def _cands(rows: list[dict[str, Any]]) -> pd.DataFrame:
    base = {
        S.SOURCE: "embedding",
        rk.P_PURCHASE: 0.1,
        rk.VALUE: 10.0,
        S.IN_STOCK: True,
        R.BOUGHT: False,
        S.TOP_CATEGORY: "A",
        R.BAND_GAP: 0.0,
        R.DISCOUNT: 0.0,
    }
    out = []
    for i, r in enumerate(rows):
        row = {**base, S.ITEM_ID: f"i{i}", rk.ITEM_VECTOR: np.eye(4, dtype=np.float32)[i % 4], **r}
        out.append(row)
    df = pd.DataFrame(out)
    df.insert(0, S.USER_KEY, "u")
    return df


def _items(out: pd.DataFrame) -> list[str]:
    return list(out[S.ITEM_ID])


def test_without_rules_the_ranker_order_stands_and_nothing_is_marked() -> None:
    out = R.rerank(_cands([{rk.P_CLICK: p} for p in (0.2, 0.9, 0.5)]), PLAIN)
    assert _items(out) == ["i1", "i2", "i0"] and list(out[S.RANK]) == [1, 2, 3]
    assert all(r == [] for r in out[R.RULES])
    assert out[S.SCORE].iloc[0] == round(float(np.log(0.9)), 6)


def test_out_of_stock_items_are_dropped() -> None:
    cands = _cands([{rk.P_CLICK: 0.9, S.IN_STOCK: False}, {rk.P_CLICK: 0.5}])
    assert _items(R.rerank(cands, replace(PLAIN, drop_out_of_stock=True))) == ["i1"]
    assert _items(R.rerank(cands, PLAIN)) == ["i0", "i1"]


def test_bought_items_are_dropped_except_in_repeat_purchase_categories() -> None:
    cands = _cands(
        [
            {rk.P_CLICK: 0.9, R.BOUGHT: True, S.TOP_CATEGORY: "Electronics"},
            {rk.P_CLICK: 0.8, R.BOUGHT: True, S.TOP_CATEGORY: "Grocery"},
            {rk.P_CLICK: 0.5},
        ]
    )
    sc = replace(PLAIN, exclude_bought=True, repeat_categories=("Grocery",))
    assert _items(R.rerank(cands, sc)) == ["i1", "i2"]


def test_price_affinity_moves_items_outside_the_users_band_down() -> None:
    cands = _cands([{rk.P_CLICK: 0.6, R.BAND_GAP: 1.0}, {rk.P_CLICK: 0.5, R.BAND_GAP: 0.0}])
    out = R.rerank(cands, replace(PLAIN, price_affinity=1.0))
    assert _items(out) == ["i1", "i0"]
    assert list(out[R.RULES]) == [[R.PRICE], [R.PRICE]]
    assert _items(R.rerank(cands, replace(PLAIN, price_affinity=0.1))) == ["i0", "i1"]  # too weak to move


def test_promotion_boost_moves_discounted_items_up() -> None:
    cands = _cands([{rk.P_CLICK: 0.6}, {rk.P_CLICK: 0.5, R.DISCOUNT: 0.4}, {rk.P_CLICK: 0.1}])
    out = R.rerank(cands, replace(PLAIN, promotion_boost=1.0))
    assert _items(out) == ["i1", "i0", "i2"]
    assert list(out[R.RULES]) == [[R.PROMOTION], [R.PROMOTION], []]  # i2 kept its place


def test_category_cap_limits_each_category_and_fills_from_the_rest() -> None:
    cats = ["A", "A", "A", "B", "A"]
    cands = _cands([{rk.P_CLICK: 0.9 - 0.1 * i, S.TOP_CATEGORY: c} for i, c in enumerate(cats)])
    out = R.rerank(cands, replace(PLAIN, diversity="category_cap", category_cap=2, k=3))
    assert _items(out) == ["i0", "i1", "i3"]
    assert list(out[R.RULES]) == [[], [], [R.CATEGORY_CAP]]
    # too few other categories: the list is still filled to k
    assert len(R.rerank(cands, replace(PLAIN, diversity="category_cap", category_cap=1, k=4))) == 4


def test_mmr_separates_near_duplicates() -> None:
    twin = np.array([1, 0, 0, 0], dtype=np.float32)
    cands = _cands(
        [
            {rk.P_CLICK: 0.9, rk.ITEM_VECTOR: twin},
            {rk.P_CLICK: 0.89, rk.ITEM_VECTOR: twin},
            {rk.P_CLICK: 0.8, rk.ITEM_VECTOR: np.array([0, 1, 0, 0], dtype=np.float32)},
        ]
    )
    out = R.rerank(cands, replace(PLAIN, diversity="mmr", mmr_lambda=0.5, k=3))
    assert _items(out) == ["i0", "i2", "i1"]
    assert _items(R.rerank(cands, replace(PLAIN, diversity="mmr", mmr_lambda=1.0, k=3))) == ["i0", "i1", "i2"]


def test_the_final_score_weighs_click_purchase_and_value() -> None:
    cands = _cands(
        [
            {rk.P_CLICK: 0.8, rk.P_PURCHASE: 0.05, rk.VALUE: 5.0},
            {rk.P_CLICK: 0.4, rk.P_PURCHASE: 0.30, rk.VALUE: 50.0},
        ]
    )
    assert _items(R.rerank(cands, PLAIN)) == ["i0", "i1"]  # engagement
    revenue = replace(PLAIN, weights=ObjectiveWeights(click=1.0, purchase=1.0, value=1.0))
    assert _items(R.rerank(cands, revenue)) == ["i1", "i0"]
