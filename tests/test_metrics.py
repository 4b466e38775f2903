"""Metrics against hand-computed cases and an independent NumPy reference; blocked retrieval
against brute force."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.evaluation import metrics as M
from shoprec.modeling.retrieval import (
    VECTOR,
    ItemMatrix,
    score_pairs,
    sharded_top_k,
    top_k,
    top_k_block,
    top_k_from,
    vectors_of,
)

pytestmark = pytest.mark.spark


def _recs(spark: SparkSession, recs: dict[str, list[str]]) -> DataFrame:
    rows = [(u, r + 1, i) for u, items in recs.items() for r, i in enumerate(items)]
    return spark.createDataFrame(rows, f"{S.USER_KEY} string, {S.RANK} int, {S.ITEM_ID} string")


def _truth(spark: SparkSession, truth: dict[str, set[str]]) -> DataFrame:
    rows = [(u, i) for u, items in truth.items() for i in sorted(items)]
    return spark.createDataFrame(rows, f"{S.USER_KEY} string, {S.ITEM_ID} string")


def _values(df: DataFrame) -> dict[tuple[str, int], float]:
    return {(r[S.METRIC], r[S.K]): r[S.VALUE] for r in df.collect()}


def reference(recs: dict[str, list[str]], truth: dict[str, set[str]], k: int) -> dict[str, float]:
    """The textbook definitions, one user at a time, in NumPy."""
    rows = []
    for user, relevant in truth.items():
        ranked = recs.get(user, [])
        gains = np.array([1.0 if item in relevant else 0.0 for item in ranked[:k]])
        discounts = 1.0 / np.log2(np.arange(2, len(gains) + 2))
        ideal = (1.0 / np.log2(np.arange(2, min(k, len(relevant)) + 2))).sum()
        precision_at = np.cumsum(gains) / np.arange(1, len(gains) + 1) if len(gains) else np.zeros(0)
        first = next((i + 1 for i, item in enumerate(ranked) if item in relevant), None)
        rows.append(
            {
                "hit_rate": float(gains.sum() > 0),
                "precision": gains.sum() / k,
                "recall": gains.sum() / len(relevant),
                "ndcg": float((gains * discounts).sum() / ideal),
                "map": float((precision_at * gains).sum() / min(k, len(relevant))),
                "mrr": 1.0 / first if first else 0.0,
            }
        )
    return {c: float(v) for c, v in pd.DataFrame(rows).mean().items()}


def test_hand_computed_case(spark: SparkSession) -> None:
    # u1: relevant {a, c}, list a b c d -> hits at ranks 1 and 3; u2: relevant {z}, never recommended
    recs = {"u1": ["a", "b", "c", "d"], "u2": ["a", "b", "c", "d"]}
    truth = {"u1": {"a", "c"}, "u2": {"z"}}
    got = _values(M.ranking_metrics(_recs(spark, recs), _truth(spark, truth), [2, 4]))
    assert got[("hit_rate", 2)] == pytest.approx(0.5)
    assert got[("recall", 2)] == pytest.approx(0.25)  # u1 1/2, u2 0
    assert got[("recall", 4)] == pytest.approx(0.5)
    assert got[("precision", 4)] == pytest.approx((2 / 4) / 2)
    ndcg4_u1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert got[("ndcg", 4)] == pytest.approx(ndcg4_u1 / 2)
    assert got[("map", 4)] == pytest.approx(((1 / 1 + 2 / 3) / 2) / 2)
    assert got[("mrr", 0)] == pytest.approx(0.5)  # u1 1/1, u2 0: users without hits count


def test_matches_numpy_reference_on_random_data(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    items = [f"i{j}" for j in range(40)]
    recs = {f"u{n}": [str(i) for i in rng.choice(items, size=15, replace=False)] for n in range(60)}
    truth = {
        f"u{n}": {str(i) for i in rng.choice(items, size=int(rng.integers(1, 6)), replace=False)}
        for n in range(70)
    }
    got = _values(M.ranking_metrics(_recs(spark, recs), _truth(spark, truth), [5, 10]))
    for k in (5, 10):
        want = reference(recs, truth, k)
        for metric in ("hit_rate", "precision", "recall", "ndcg", "map"):
            assert got[(metric, k)] == pytest.approx(want[metric], abs=1e-9), (metric, k)
    assert got[("mrr", 0)] == pytest.approx(reference(recs, truth, 15)["mrr"], abs=1e-9)


def test_slices_are_computed_per_key(spark: SparkSession) -> None:
    recs = _recs(spark, {"u1": ["a", "b"], "u2": ["a", "b"]})
    truth = spark.createDataFrame(
        [("u1", "a", "cold"), ("u2", "x", "warm")],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, {S.SLICE} string",
    )
    out = M.ranking_metrics(recs, truth, [1], [S.SLICE]).where(F.col(S.METRIC) == "hit_rate").collect()
    assert {r[S.SLICE]: (r[S.VALUE], r[S.USERS]) for r in out} == {"cold": (1.0, 1), "warm": (0.0, 1)}


def test_sampled_rank_counts_ties_as_half(spark: SparkSession) -> None:
    scored = spark.createDataFrame(
        [(1, True, 0.5), (1, False, 0.9), (1, False, 0.5), (1, False, 0.1), (2, True, 1.0), (2, False, 0.0)],
        "event long, is_positive boolean, score double",
    )
    ranks = {r["event"]: r[S.RANK] for r in M.positive_rank(scored).collect()}
    assert ranks == {1: 2.5, 2: 1.0}
    got = _values(M.sampled_metrics(M.positive_rank(scored), [1, 3]))
    assert got[("hit_rate", 1)] == pytest.approx(0.5)
    assert got[("ndcg", 3)] == pytest.approx((1 / math.log2(3.5) + 1.0) / 2)


def test_served_lists_rank_sampled_candidates_by_place_and_a_dropped_positive_last(
    spark: SparkSession,
) -> None:
    """Sampled ranking of served lists: a candidate's score is its place in the user's list; one
    the rules dropped ranks below the list, and a dropped positive below every candidate."""
    from types import SimpleNamespace

    from shoprec.evaluation.job import served_sampled

    sampled = spark.createDataFrame(
        [(1, "u1", "a", False), (1, "u1", "b", True), (1, "u1", "c", False),
         (2, "u2", "a", True), (2, "u2", "b", False), (2, "u2", "c", False)],
        f"event long, {S.USER_KEY} string, {S.ITEM_ID} string, is_positive boolean",
    )  # fmt: skip
    # u1's list: a, b, c; u2's: b only (the rules dropped a, the positive, and c)
    lists = _recs(spark, {"u1": ["a", "b", "c"], "u2": ["b"]})
    data = SimpleNamespace(sampled=sampled, sampled_label="sampled:given")
    rows = served_sampled(data, lists, (1, 2))  # type: ignore[arg-type]
    assert {r[S.RANKING] for r in rows.collect()} == {"sampled:given"}
    got = _values(rows)
    assert got[("hit_rate", 1)] == 0.0 and got[("hit_rate", 2)] == pytest.approx(0.5)
    assert got[("mrr", 0)] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_beyond_accuracy(spark: SparkSession) -> None:
    recs = _recs(spark, {"u1": ["a", "b"], "u2": ["a", "c"]})
    catalog = spark.createDataFrame([(i,) for i in "abcd"], f"{S.ITEM_ID} string")
    assert M.coverage(recs, 4, [1, 2]) == [("coverage", 1, 0.25), ("coverage", 2, 0.75)]
    cats = spark.createDataFrame(
        [("a", "x"), ("b", "x"), ("c", "y")], f"{S.ITEM_ID} string, {S.TOP_CATEGORY} string"
    )
    assert M.category_diversity(recs, cats, 2) == pytest.approx(0.5)  # u1 same category, u2 differs
    exposure = [2.0, 1.0, 1.0, 0.0]  # a twice, b and c once, d never
    gini = M.exposure_gini(recs, catalog, 2)
    assert gini == pytest.approx(
        float(np.abs(np.subtract.outer(exposure, exposure)).mean() / (2 * np.mean(exposure)))
    )
    users = spark.createDataFrame([("a", 2), ("b", 1)], f"{S.ITEM_ID} string, _users long")
    want = np.mean([-np.log2(3 / 5), -np.log2(2 / 5), -np.log2(3 / 5), -np.log2(1 / 5)])
    assert M.novelty(recs, users, 4, 2) == pytest.approx(want)
    vectors = spark.createDataFrame(
        [("a", [1.0, 0.0]), ("b", [0.0, 2.0]), ("c", [1.0, 0.0])],
        f"{S.ITEM_ID} string, {VECTOR} array<double>",
    )
    assert M.embedding_diversity(recs, vectors, 2) == pytest.approx(0.5)  # orthogonal 1, identical 0


def test_blocked_top_k_equals_brute_force_with_exclusions() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(37, 8)).astype(np.float32), rng.normal(size=(101, 8)).astype(np.float32)
    exclude = [rng.choice(101, size=5, replace=False) for _ in range(37)]
    idx, scores = top_k_block(users, items, 10, item_block=16, exclude=exclude)
    full = users @ items.T
    for r, e in enumerate(exclude):
        full[r, e] = -np.inf
    want = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, 1), rtol=1e-5)


def test_items_with_one_vector_are_taken_in_item_order_however_the_catalog_is_blocked() -> None:
    """Variants whose text differs only past the tower's width share a vector: at the cut, the
    lower item row wins, in every block size (``torch.topk`` alone picks among equals
    arbitrarily, and sharded retrieval would then disagree with one broadcast)."""
    rng = np.random.default_rng(1)
    items = rng.normal(size=(60, 8)).astype(np.float32)
    items[[17, 33, 34, 58]] = items[5]
    users = np.vstack([items[5], rng.normal(size=(4, 8)).astype(np.float32)])
    full = users @ items.T
    for k in (1, 2, 3, 6):
        want = [sorted(range(60), key=lambda j, r=r: (-full[r, j], j))[:k] for r in range(len(users))]
        for block in (60, 16, 7, 1):
            idx, _ = top_k_block(users, items, k, item_block=block)
            assert idx[0].tolist() == want[0], (k, block)  # the tied user: exact, by item row
            assert idx[1:].tolist() == want[1:], (k, block)


def test_arrow_vectors_become_one_matrix_and_a_bad_row_is_named() -> None:
    import pyarrow as pa

    from shoprec.errors import ShoprecError

    col = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], pa.list_(pa.float32()))
    np.testing.assert_array_equal(vectors_of(col.slice(1), "x"), [[3.0, 4.0], [5.0, 6.0]])
    with pytest.raises(ShoprecError, match="row 1"):
        vectors_of(pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32())), "x")
    with pytest.raises(ShoprecError, match="row 2"):
        vectors_of(pa.array([[1.0], [2.0], None], pa.list_(pa.float32())), "x")


def test_top_k_in_spark_excludes_and_ranks(spark: SparkSession) -> None:
    items = spark.createDataFrame(
        [("a", [3.0]), ("b", [2.0]), ("c", [1.0])], f"{S.ITEM_ID} string, {VECTOR} array<float>"
    )
    users = spark.createDataFrame(
        [("u1", [1.0]), ("u2", [-1.0]), ("u3", [1.0])], f"{S.USER_KEY} string, {VECTOR} array<float>"
    )
    exclude = spark.createDataFrame(
        [("u1", "a"), ("u3", "a"), ("u3", "b")], f"{S.USER_KEY} string, {S.ITEM_ID} string"
    )
    out = top_k(spark, users, ItemMatrix.from_frame(items), 2, exclude=exclude, user_block=2, item_block=2)
    got = sorted((r[S.USER_KEY], r[S.RANK], r[S.ITEM_ID], r[S.SCORE]) for r in out.collect())
    # u3 has one item left after its exclusions: one row, not a masked one
    assert got == [
        ("u1", 1, "b", 2.0),
        ("u1", 2, "c", 1.0),
        ("u2", 1, "c", -1.0),
        ("u2", 2, "b", -2.0),
        ("u3", 1, "c", 1.0),
    ]
    pairs = spark.createDataFrame([("u1", "a"), ("u2", "zz")], f"{S.USER_KEY} string, {S.ITEM_ID} string")
    scores = {r[S.USER_KEY]: r[S.SCORE] for r in score_pairs(pairs, users, items).collect()}
    assert scores == {"u1": 3.0, "u2": 0.0}


def test_sharded_retrieval_returns_the_broadcast_lists(spark: SparkSession) -> None:
    """A catalog over the broadcast bound is scored shard by shard and merged per user: the same
    (user, rank, item) rows as one broadcast, exclusions included, at the demo's catalog size."""
    rng = np.random.default_rng(5)
    n_users, n_items, dim, k = 120, 2400, 32, 50
    item_rows = [(f"i{j:05d}", rng.normal(size=dim).astype(float).tolist()) for j in range(n_items)]
    user_rows = [(f"u{j:04d}", rng.normal(size=dim).astype(float).tolist()) for j in range(n_users)]
    items = spark.createDataFrame(item_rows, f"{S.ITEM_ID} string, {VECTOR} array<float>")
    users = spark.createDataFrame(user_rows, f"{S.USER_KEY} string, {VECTOR} array<float>")
    seen = [(u, f"i{j:05d}") for u, _ in user_rows[::3] for j in rng.choice(n_items, 20, replace=False)]
    exclude = spark.createDataFrame(seen, f"{S.USER_KEY} string, {S.ITEM_ID} string")

    def rows(frame: DataFrame) -> tuple[list[tuple[str, int, str]], dict[tuple[str, int], float]]:
        got = frame.collect()
        return (
            sorted((r[S.USER_KEY], r[S.RANK], r[S.ITEM_ID]) for r in got),
            {(r[S.USER_KEY], r[S.RANK]): r[S.SCORE] for r in got},
        )

    want, want_scores = rows(top_k(spark, users, ItemMatrix.from_frame(items), k, exclude, 64, 500))
    assert len(want) == n_users * k
    assert not {(u, i) for u, _, i in want} & set(seen)
    mib = n_items * dim * 4 / 2**20
    for frame in (
        sharded_top_k(spark, users, items, k, 3, exclude, 64, 500),
        top_k_from(spark, users, items, k, exclude, 64, 500, broadcast_mib=mib / 4),  # 4 shards
    ):
        got, scores = rows(frame)
        assert got == want
        assert scores == pytest.approx(want_scores, rel=1e-5)
