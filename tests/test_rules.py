"""Each business rule on its own, on one user's hand-made candidates (no Spark needed)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from shoprec import schemas as S
from shoprec.config import ObjectiveWeights, ScenarioConfig
from shoprec.modeling import ranker as rk
from shoprec.serving import rules as R

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


def _many(n_users: int, seed: int) -> pd.DataFrame:
    """Random candidates of many users (some lose every candidate to the rules), rows shuffled."""
    rng = np.random.default_rng(seed)
    frames = []
    for u in range(n_users):
        n = int(rng.integers(1, 30))
        rows = [
            {
                rk.P_CLICK: float(rng.choice([0.5, rng.random()])),  # ties, broken by item id
                rk.P_PURCHASE: float(rng.random()),
                S.IN_STOCK: bool(rng.random() > 0.2) and u % 7 != 0,
                R.BOUGHT: bool(rng.random() > 0.8),
                S.TOP_CATEGORY: str(rng.choice(["A", "B", "C", "Grocery"])),
                R.BAND_GAP: float(rng.integers(0, 3)) / 2,
                R.DISCOUNT: float(rng.choice([0.0, 0.3])),
                rk.ITEM_VECTOR: rng.normal(size=4).astype(np.float32),
            }
            for _ in range(n)
        ]
        frames.append(_cands(rows).assign(**{S.USER_KEY: f"u{u:03d}"}))
    return pd.concat(frames).sample(frac=1.0, random_state=seed).reset_index(drop=True)


ALL_RULES = replace(
    PLAIN,
    k=5,
    drop_out_of_stock=True,
    exclude_bought=True,
    repeat_categories=("Grocery",),
    price_affinity=0.5,
    promotion_boost=1.0,
    diversity="category_cap",
    category_cap=2,
)


def test_many_users_at_once_give_each_user_the_list_it_gets_alone() -> None:
    cands = _many(40, 1)
    for sc in (PLAIN, ALL_RULES, replace(ALL_RULES, diversity="mmr", mmr_lambda=0.7)):
        together = R.rerank_many(cands.rename(columns={S.USER_KEY: R.GROUP}), sc)
        alone = []
        for user, pdf in cands.groupby(S.USER_KEY):
            one = R.rerank(pdf, sc)
            alone.append(one.assign(**{R.GROUP: user})[together.columns])
        expected = pd.concat(alone).reset_index(drop=True)
        # without rules every user has a list; with them some lose every candidate
        n = expected[R.GROUP].nunique()
        assert n == 40 if sc is PLAIN else n <= 34  # every 7th user has nothing in stock
        pd.testing.assert_frame_equal(together.reset_index(drop=True), expected, check_dtype=False)


def test_the_arrow_runner_keeps_users_whole_across_batches() -> None:
    import pyarrow as pa

    cands = _many(12, 2).sort_values(S.USER_KEY, kind="mergesort").drop(columns=[rk.ITEM_VECTOR])
    fields = list(cands.columns)
    table = pa.Table.from_pandas(cands, preserve_index=False)
    # cut into small batches: users span two and three batches, a batch can hold one user's middle
    cuts = [0, 3, 5, 6, 20, 21, 50, 90, len(cands)]
    batches = [table.slice(a, b - a).combine_chunks().to_batches()[0] for a, b in itertools.pairwise(cuts)]
    out = pa.Table.from_batches(list(R.arrow_runner(ALL_RULES, fields)(iter(batches)))).to_pandas()
    expected = R.rerank_many(cands.rename(columns={S.USER_KEY: R.GROUP}), ALL_RULES)
    expected = expected.rename(columns={R.GROUP: S.USER_KEY})
    assert out[S.USER_KEY].is_monotonic_increasing and len(out) > 12
    pd.testing.assert_frame_equal(
        out.drop(columns=[R.RULES]),
        expected.drop(columns=[R.RULES]).reset_index(drop=True),
        check_dtype=False,
    )
    assert [list(r) for r in out[R.RULES]] == list(expected[R.RULES])
