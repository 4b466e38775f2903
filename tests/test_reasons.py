"""Explanations: the kind the booster credits, and the history item a reason names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.modeling import candidates as C
from shoprec.modeling import ltr
from shoprec.modeling import ranker as rk
from shoprec.serving import reasons as R


def test_every_ranker_feature_belongs_to_one_kind_or_is_named_unexplained() -> None:
    names = ltr.feature_names(C.SOURCES)
    grouped = [f for k in R.KINDS for f in R.KIND_FEATURES[k]]
    assert len(grouped) == len(set(grouped)), "a feature in two kinds would be credited twice"
    assert set(grouped) | R.UNEXPLAINED == set(names) and not set(grouped) & R.UNEXPLAINED
    assert all(R.groups(names)), "every kind has features the model reads"
    assert {k for _, k in R.SOURCE_ORDER} <= set(R.KINDS)


def test_the_top_group_is_the_largest_positive_sum_and_none_when_nothing_raised_the_score() -> None:
    # three features and the expected value; groups {0, 1} and {2}
    contrib = np.array([[0.2, 0.3, 0.4, 9.0], [0.5, -0.4, 0.2, 9.0], [-0.1, -0.2, -0.3, 9.0]])
    got = ltr.top_group(contrib, [np.array([0, 1]), np.array([2])])
    assert got.tolist() == [0, 1, -1]


@pytest.mark.spark
def test_the_kind_named_is_the_one_the_booster_credits(spark: SparkSession, tmp_path: Path) -> None:
    """Lists whose one positive has the highest co-occurrence with the user's items (the other
    features noise): the booster learns that, and its positives are explained by co-occurrence."""
    names = ltr.feature_names(C.SOURCES)
    signal = names.index(ltr.COOC_SUM)
    rng = np.random.default_rng(5)
    n_users, size = 200, 12
    x = rng.normal(size=(n_users * size, len(names))).astype(np.float32)
    y = np.zeros(len(x), dtype=np.float32)
    for u in range(n_users):
        y[u * size + int(np.argmax(x[u * size : (u + 1) * size, signal]))] = 1.0
    users = np.repeat(np.array([f"u{i:04d}" for i in range(n_users)], dtype=object), size)
    fitted = ltr.fit(x, y, users, np.zeros(len(y), dtype=bool), names, {}, 60, 10, seed=3)
    ltr.save(fitted, tmp_path / "ranker", {"chosen": "lightgbm"})
    rows = [
        (str(u), f"i{k}", [float(v) for v in row]) for k, (u, row) in enumerate(zip(users, x, strict=True))
    ]
    df = spark.createDataFrame(rows, f"{S.USER_KEY} string, {S.ITEM_ID} string, {rk.FEATURES} array<float>")
    out = ltr.predict_frame(df.repartition(2), str(tmp_path / "ranker"), names, R.groups(names))
    got = {r[S.ITEM_ID]: r for r in out.withColumn("kind", R.kind_of_group(F.col(ltr.TOP_GROUP))).collect()}
    positives = [f"i{k}" for k in np.flatnonzero(y)]
    together = np.mean([got[i]["kind"] == R.TOGETHER for i in positives])
    assert together > 0.9, f"only {together:.0%} of the positives credited to co-occurrence"
    # a row no feature group raised has no credited kind (the source will name it)
    lowest = min(got.values(), key=lambda r: r[ltr.LTR_SCORE])
    assert lowest[ltr.TOP_GROUP] == -1 or lowest["kind"] in R.KINDS


@pytest.mark.spark
def test_the_reason_names_the_history_item_that_obviously_explains_the_item(spark: SparkSession) -> None:
    """User u's recent items: a (newest), b, c. The similar item x is nearly a's twin; y co-occurs
    with b far more than with a; z is c's substitute in the catalog; v is u's own recent item;
    w came from popularity alone. Each reason must name exactly that."""
    items = spark.createDataFrame(
        [
            (i, f"Title {i.upper()}", f"Office > Paper > Leaf {i}", "Office")
            for i in ["a", "b", "c", "x", "y", "z", "v", "w"]
        ],
        f"{S.ITEM_ID} string, {S.TITLE} string, {S.CATEGORY_PATH} string, {S.TOP_CATEGORY} string",
    )
    recent = spark.createDataFrame(
        [("u", "a", 0), ("u", "b", 1), ("u", "c", 2), ("u", "v", 3)],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, recency int",
    )
    vectors = spark.createDataFrame(
        [
            ("a", [1.0, 0.0, 0.0]),
            ("b", [0.0, 1.0, 0.0]),
            ("c", [0.0, 0.0, 1.0]),
            ("v", [0.6, 0.8, 0.0]),
            ("x", [0.99, 0.14, 0.0]),
            ("y", [0.0, 0.0, 1.0]),
            ("z", [0.0, 0.0, 1.0]),
            ("w", [0.5, 0.5, 0.7]),
        ],
        f"{S.ITEM_ID} string, vector array<float>",
    )
    pairs = spark.createDataFrame(
        [("a", "y", 0.1), ("b", "y", 0.9), ("c", "x", 0.5)], f"{S.ITEM_ID} string, other string, cooc double"
    )
    linked = spark.createDataFrame(
        [("c", "z", S.SUBSTITUTES), ("a", "w", S.COMPLEMENTS)],
        f"{S.ITEM_ID} string, other string, relation string",
    )
    lists = spark.createDataFrame(
        [
            ("u", "x", 1, C.EMBEDDING),
            ("u", "y", 2, f"{C.EMBEDDING}+{C.COOCCURRENCE}"),
            ("u", "z", 3, C.RELATED),
            ("u", "v", 4, C.RECENT),
            ("u", "w", 5, C.POPULAR),
        ],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, {S.RANK} int, {S.SOURCE} string",
    )
    # the booster credited similarity for x and co-occurrence for y; z, v and w fall to their source
    kinds = spark.createDataFrame(
        [
            ("u", "x", R.SIMILAR),
            ("u", "y", R.TOGETHER),
            ("u", "z", None),
            ("u", "v", R.SEEN),
            ("u", "w", None),
        ],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, {R.KIND_COLUMN} string",
    )
    out = R.explain(lists, kinds, items, recent, vectors, pairs, linked, decay=0.8)
    assert out.columns == [*lists.columns, S.REASON]
    assert out.schema[S.REASON].dataType == S.REASON_SCHEMA
    got = {r[S.ITEM_ID]: r[S.REASON] for r in out.collect()}
    assert got["x"].asDict() == {
        S.REASON_KIND: R.SIMILAR,
        S.REASON_ITEM: "a",
        S.REASON_TEXT: "Because you viewed Title A",
    }
    # y: b's co-occurrence (.9 × .8) beats a's (.1), though a is newer
    assert (got["y"][S.REASON_KIND], got["y"][S.REASON_ITEM]) == (R.TOGETHER, "b")
    assert got["y"][S.REASON_TEXT] == "Often chosen together with Title B"
    assert (got["z"][S.REASON_KIND], got["z"][S.REASON_ITEM]) == (R.ALTERNATIVE, "c")
    assert got["z"][S.REASON_TEXT] == "An alternative to Title C"
    assert (got["v"][S.REASON_KIND], got["v"][S.REASON_ITEM]) == (R.SEEN, "v")
    assert (got["w"][S.REASON_KIND], got["w"][S.REASON_ITEM]) == (R.POPULAR, None)
    assert got["w"][S.REASON_TEXT] == "Popular in Office"


@pytest.mark.spark
def test_a_similarity_reason_without_history_says_so_and_long_titles_are_cut(spark: SparkSession) -> None:
    items = spark.createDataFrame(
        [("a", "A" * 200, "Office", "Office"), ("x", "X", "Office", "Office")],
        f"{S.ITEM_ID} string, {S.TITLE} string, {S.CATEGORY_PATH} string, {S.TOP_CATEGORY} string",
    )
    vectors = spark.createDataFrame([("a", [1.0]), ("x", [1.0])], f"{S.ITEM_ID} string, vector array<float>")
    empty_pairs = spark.createDataFrame([], f"{S.ITEM_ID} string, other string, cooc double")
    empty_links = spark.createDataFrame([], f"{S.ITEM_ID} string, other string, relation string")
    lists = spark.createDataFrame(
        [("u", "x", 1, C.EMBEDDING), ("t", "x", 1, C.EMBEDDING)],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, {S.RANK} int, {S.SOURCE} string",
    )
    kinds = spark.createDataFrame([], f"{S.USER_KEY} string, {S.ITEM_ID} string, {R.KIND_COLUMN} string")
    recent = spark.createDataFrame([("t", "a", 0)], f"{S.USER_KEY} string, {S.ITEM_ID} string, recency int")
    got = {
        r[S.USER_KEY]: r[S.REASON]
        for r in R.explain(lists, kinds, items, recent, vectors, empty_pairs, empty_links, 0.8).collect()
    }
    assert got["u"][S.REASON_ITEM] is None and got["u"][S.REASON_TEXT] == "Like items you viewed"
    text = got["t"][S.REASON_TEXT]
    assert got["t"][S.REASON_ITEM] == "a" and text.endswith("…") and len(text) < 90


@pytest.mark.spark
def test_reasons_reach_a_recommendations_table_an_older_shoprec_made_and_a_change_rewrites_them(
    spark: SparkSession, tmp_path: Path
) -> None:
    from pyspark.sql.types import StructField, StructType

    from shoprec import delta
    from shoprec.config import ScenarioConfig, from_dict
    from shoprec.scoring.job import merge_lists
    from shoprec.serving.lists import LIST_SCHEMA

    cfg = from_dict({"paths": {"root": str(tmp_path)}})
    location = cfg.table("recommendations")
    older = StructType([f for f in S.RECOMMENDATION_SCHEMA.fields if f.name != S.REASON])
    delta.ensure_table(spark, location, older, [S.MODEL])
    schema = StructType([*LIST_SCHEMA.fields, StructField(S.REASON, S.REASON_SCHEMA, True)])

    def lists(text: str):  # type: ignore[no-untyped-def]
        return spark.createDataFrame([("u", "x", 1, 0.5, C.EMBEDDING, [], (R.SIMILAR, "a", text))], schema)

    app = ScenarioConfig(name="app", k=2)
    merge_lists(spark, cfg, [(app, lists("Because you viewed A"))], "v1", "run-1")
    merge_lists(spark, cfg, [(app, lists("Because you viewed A"))], "v1", "run-1")
    table = delta.for_location(spark, location)
    again = table.history(1).select("operationMetrics").first()
    assert again is not None and again[0]["numTargetRowsUpdated"] == again[0]["numTargetRowsInserted"] == "0"
    stored = delta.read(spark, location).first()
    assert stored is not None and stored[S.REASON][S.REASON_TEXT] == "Because you viewed A"
    assert stored[S.REASON][S.REASON_ITEM] == "a"
    merge_lists(spark, cfg, [(app, lists("Because you viewed A, again"))], "v1", "run-1")
    stored = delta.read(spark, location).first()
    assert stored is not None and stored[S.REASON][S.REASON_TEXT] == "Because you viewed A, again"
    metrics = table.history(1).select("operationMetrics").first()
    assert metrics is not None and metrics[0]["numTargetRowsUpdated"] == "1"
