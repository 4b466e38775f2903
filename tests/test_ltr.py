"""Learning to rank: co-occurrence in Spark, LambdaRank lists, fold members averaged in Spark tasks."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from conftest import small_cfg
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.modeling import ltr
from shoprec.modeling import ranker as rk

T0 = datetime(2026, 1, 1)


def _interactions(spark: SparkSession, rows: list[tuple[str, str, int]]):  # type: ignore[no-untyped-def]
    return spark.createDataFrame(
        [(u, i, T0 + timedelta(hours=h)) for u, i, h in rows],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, {S.EVENT_TIME} timestamp",
    )


@pytest.mark.spark
def test_cooccurrence_weights_pairs_by_distance_and_normalises_by_counts(spark: SparkSession) -> None:
    # u1: a b c (in time order); u2: a b. Pairs within 2 positions: (a,b) at distance 1 twice,
    # (b,c) at 1 once, (a,c) at 2 once. Counts: a 2, b 2, c 1.
    inter = _interactions(
        spark, [("u1", "a", 0), ("u1", "b", 1), ("u1", "c", 2), ("u2", "a", 0), ("u2", "b", 5)]
    )
    got = {(r[0], r[1]): round(r[2], 6) for r in ltr.cooccurrence(inter, window=2, neighbours=10).collect()}
    expected = {
        ("a", "b"): round(2.0 / np.sqrt(2 * 2), 6),
        ("b", "a"): round(2.0 / np.sqrt(2 * 2), 6),
        ("b", "c"): round(1.0 / np.sqrt(2 * 1), 6),
        ("c", "b"): round(1.0 / np.sqrt(2 * 1), 6),
        ("a", "c"): round(0.5 / np.sqrt(2 * 1), 6),
        ("c", "a"): round(0.5 / np.sqrt(2 * 1), 6),
    }
    assert got == expected
    # the neighbour cap keeps each item's best
    top1 = {(r[0], r[1]) for r in ltr.cooccurrence(inter, window=2, neighbours=1).collect()}
    assert top1 == {("a", "b"), ("b", "a"), ("c", "b")}


@pytest.mark.spark
def test_cooc_scores_decay_with_recency_and_name_the_last_item(spark: SparkSession) -> None:
    inter = _interactions(spark, [("u", "x", 0), ("u", "y", 1)])  # y is the newest
    recent = ltr.recent_items(inter, 5)
    assert sorted((r[1], r[2]) for r in recent.collect()) == [("x", 1), ("y", 0)]
    cooc = spark.createDataFrame(
        [("x", "z", 1.0), ("y", "z", 0.5), ("y", "w", 0.25)], f"{S.ITEM_ID} string, other string, cooc double"
    )
    got = {r[S.ITEM_ID]: r for r in ltr.cooc_scores(recent, cooc, decay=0.5).collect()}
    assert got["z"][ltr.COOC_SUM] == pytest.approx(0.5 * 1.0 + 1.0 * 0.5)
    assert got["z"][ltr.COOC_MAX] == 1.0 and got["z"][ltr.COOC_LAST] == 0.5
    assert got["w"][ltr.COOC_SUM] == 0.25 and got["w"][ltr.COOC_LAST] == 0.25


@pytest.mark.spark
def test_catalog_links_score_forward_per_kind_backward_and_decay_with_recency(spark: SparkSession) -> None:
    """The catalog's complements and substitutes of the user's recent items: forward links per
    kind (decayed by how recent the linking item is, the newest flagged), backward links apart,
    and links to items the catalog lacks dropped."""
    items = spark.createDataFrame(
        [
            ("x", ["z", "gone"], []),  # x's page names z, and an item the catalog lacks
            ("y", ["z"], ["w"]),  # y (the newest) names z as a complement, w as a substitute
            ("z", [], []),
            ("w", [], []),
            ("v", ["y"], None),  # v names y: a backward link for the user of y
        ],
        f"{S.ITEM_ID} string, {S.COMPLEMENTS} array<string>, {S.SUBSTITUTES} array<string>",
    )
    linked = ltr.links(items)
    assert sorted(tuple(r) for r in linked.select(S.ITEM_ID, "other", "relation").collect()) == [
        ("v", "y", S.COMPLEMENTS),
        ("x", "z", S.COMPLEMENTS),
        ("y", "w", S.SUBSTITUTES),
        ("y", "z", S.COMPLEMENTS),
    ]
    recent = ltr.recent_items(_interactions(spark, [("u", "x", 0), ("u", "y", 1)]), 5)
    got = {r[S.ITEM_ID]: r for r in ltr.related_scores(recent, linked, decay=0.5).collect()}
    assert set(got) == {"z", "w", "v"}
    z, w, v = got["z"], got["w"], got["v"]
    assert z[ltr.COMPLEMENT_SUM] == pytest.approx(1.0 + 0.5) and z[ltr.COMPLEMENT_LAST] == 1.0
    assert z[ltr.SUBSTITUTE_SUM] == 0.0 and z[ltr.RELATED_BACK] == 0.0
    assert z[ltr.RELATED_SCORE] == pytest.approx(1.5)
    assert w[ltr.SUBSTITUTE_SUM] == 1.0 and w[ltr.SUBSTITUTE_LAST] == 1.0 and w[ltr.COMPLEMENT_SUM] == 0.0
    assert v[ltr.RELATED_BACK] == 1.0 and v[ltr.RELATED_SCORE] == 0.0


def _lists(n_users: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """Lists whose one positive has the highest feature 0 (plus noise in feature 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_users * size, 3)).astype(np.float32)
    y = np.zeros(n_users * size, dtype=np.float32)
    users = np.repeat(np.array([f"u{i:04d}" for i in range(n_users)], dtype=object), size)
    for u in range(n_users):
        rows = slice(u * size, (u + 1) * size)
        y[rows][np.argmax(x[rows, 0])] = 1.0
    x[:, 2] = np.nan  # an unknown feature (a source that proposed nothing) must be tolerated
    return x, y, users


def test_lambdarank_learns_the_signal_and_early_stops_on_held_out_users(tmp_path: Path) -> None:
    x, y, users = _lists(300, 20, seed=1)
    held = np.arange(len(users)) >= 240 * 20
    names = ["signal", "noise", "missing"]
    fitted = ltr.fit(x, y, users, held, names, {"learning_rate": 0.1}, 200, 20, seed=3)
    xt, yt, ut = _lists(100, 20, seed=2)
    ndcg = ltr.ndcg_at(fitted.predict(xt), yt, ut, 10)
    random = ltr.ndcg_at(np.random.default_rng(0).normal(size=len(yt)), yt, ut, 10)
    assert ndcg > 0.9 > 0.5 > random
    assert next(iter(fitted.meta["importance_gain"])) == "signal"
    # calibrated, the scores are probabilities of being the one taken: rising with the score, and
    # averaging the positives' share (one in 20 here)
    a, b = ltr.calibrate(fitted.predict(xt), yt)
    p = 1 / (1 + np.exp(-(a * fitted.predict(xt) + b)))
    assert a > 0 and abs(p.mean() - 1 / 20) < 0.01
    assert fitted.meta["members"][0]["best_iteration"] <= 200


def test_fold_members_are_fitted_on_the_other_folds_and_score_out_of_fold() -> None:
    x, y, users = _lists(200, 20, seed=5)
    names = ["signal", "noise", "missing"]
    fold = ltr.fold_of(users, 4, seed=3)
    assert np.array_equal(fold, ltr.fold_of(users, 4, seed=3))  # the same deal on every run
    per_user = {u: set(fold[users == u]) for u in np.unique(users)}
    assert all(len(f) == 1 for f in per_user.values())  # a user's list stays in one fold
    assert sorted(np.bincount([f.pop() for f in per_user.values()])) == [50, 50, 50, 50]
    fitted, oof = ltr.fit_folds(x, y, users, names, {"learning_rate": 0.1}, 200, 20, seed=3, folds=4)
    assert len(fitted.boosters) == len(fitted.meta["members"]) == 4
    assert all(m["best_iteration"] <= 200 and m["std"] > 0 for m in fitted.meta["members"])
    # every row is scored by the member that never saw its user, and that score ranks well
    assert np.isfinite(oof).all() and ltr.ndcg_at(oof, y, users, 10) > 0.9
    xt, yt, ut = _lists(100, 20, seed=6)
    assert ltr.ndcg_at(fitted.predict(xt), yt, ut, 10) > 0.9
    # the members' scores are standardised on what each was fitted on: the average is too
    assert abs(fitted.predict(x).mean()) < 0.2 and 0.5 < fitted.predict(x).std() < 1.5


@pytest.mark.spark
def test_the_saved_members_score_the_same_in_spark_tasks(spark: SparkSession, tmp_path: Path) -> None:
    x, y, users = _lists(60, 10, seed=4)
    names = ["signal", "noise", "missing"]
    fitted, _ = ltr.fit_folds(x, y, users, names, {}, 30, 10, seed=3, folds=3)
    out = tmp_path / "ranker"
    out.mkdir()
    (out / "ltr.7.txt").write_text("an earlier version's member")
    ltr.save(fitted, out, {"chosen": "lightgbm"})
    assert ltr.exists(out) and ltr.load_meta(out)["chosen"] == "lightgbm"
    assert sorted(f.name for f in out.glob("ltr*.txt")) == ["ltr.1.txt", "ltr.2.txt", "ltr.txt"]
    rows = [
        (str(u), f"i{k}", [float(v) for v in row]) for k, (u, row) in enumerate(zip(users, x, strict=True))
    ]
    df = spark.createDataFrame(rows, f"{S.USER_KEY} string, {S.ITEM_ID} string, {rk.FEATURES} array<float>")
    expected = fitted.predict(x)
    scored = ltr.predict_frame(df.repartition(3), str(out), names).collect()
    got = {r[S.ITEM_ID]: r[ltr.LTR_SCORE] for r in scored}
    assert np.allclose([got[f"i{k}"] for k in range(len(x))], expected, atol=1e-4)
    # the standardised contributions are additive: averaged, they sum to the averaged score
    members = ltr.load_members(out)
    assert np.allclose(members.contributions(x).sum(axis=1), expected, atol=1e-4)
    # with explanations the score is the same, and the top row owes its score to the signal
    credited = {
        r[S.ITEM_ID]: (r[ltr.LTR_SCORE], r[ltr.TOP_GROUP])
        for r in ltr.predict_frame(df, str(out), names, [[0], [1]]).collect()
    }
    assert np.allclose([credited[f"i{k}"][0] for k in range(len(x))], expected, atol=1e-4)
    best = int(np.argmax(expected))
    assert credited[f"i{best}"][1] == 0


@pytest.mark.spark
def test_a_model_saved_as_one_booster_still_scores(spark: SparkSession, tmp_path: Path) -> None:
    """A ranker directory written before ensembles (one ``ltr.txt``, no members in its meta)."""
    x, y, users = _lists(40, 10, seed=7)
    names = ["signal", "noise", "missing"]
    fitted = ltr.fit(x, y, users, np.zeros(len(y), dtype=bool), names, {}, 20, 10, seed=3)
    out = tmp_path / "old"
    out.mkdir()
    fitted.boosters[0].save_model(str(out / ltr.LTR_FILE))
    (out / ltr.LTR_META).write_text('{"chosen": "lightgbm", "features": ["signal", "noise", "missing"]}')
    raw = fitted.boosters[0].predict(x)
    assert np.allclose(ltr.load_members(out).predict(x), raw, atol=1e-6)


def test_ndcg_at_counts_only_users_with_a_positive() -> None:
    users = np.array(["a", "a", "a", "b", "b"], dtype=object)
    labels = np.array([0, 1, 0, 0, 0], dtype=np.float32)
    scores = np.array([3.0, 2.0, 1.0, 1.0, 0.0])
    assert ltr.ndcg_at(scores, labels, users, 10) == pytest.approx(1 / np.log2(3))


@pytest.mark.spark
def test_dot_of_arrays(spark: SparkSession) -> None:
    df = spark.createDataFrame([([1.0, 2.0], [3.0, 4.0])], "a array<float>, b array<float>")
    assert df.select(ltr.dot(F.col("a"), F.col("b"))).first()[0] == pytest.approx(11.0)  # type: ignore[index]


USERS = [f"u{n}" for n in range(40)]
PAIRS = f"{S.USER_KEY} string, {S.ITEM_ID} string"


def _shop(spark: SparkSession, size: int, candidate: str, positives: list[str], touched: str):  # type: ignore[no-untyped-def]
    """(items, wide, truth, seen) for the 40 users of a ``size``-item catalog: one candidate
    each (source als, one feature ``x``), the same positives and one touched item."""
    items = spark.createDataFrame([(f"i{n:04d}",) for n in range(size)], f"{S.ITEM_ID} string")
    wide = spark.createDataFrame(
        [(u, candidate, "als", 1.0) for u in USERS], f"{PAIRS}, {S.SOURCE} string, x double"
    )
    truth = spark.createDataFrame([(u, i) for u in USERS for i in positives], PAIRS)
    seen = spark.createDataFrame([(u, touched) for u in USERS], PAIRS)
    return items, wide, truth, seen


@pytest.mark.spark
def test_outside_pairs_are_a_uniform_draw_not_every_missed_positive(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A positive no source reached enters the lists only when the draw hits it, as any item: a
    list holding all of them taught the trees that an unproposed item is a likely positive."""
    from shoprec.training.ltr_job import _outside

    cfg = small_cfg(tmp_path, tmp_path, training={"ranker": {"lightgbm": {"outside_items": 2}}})
    # ten missed positives per user, none of them a candidate
    items, wide, truth, seen = _shop(spark, 1000, "i0000", [f"i{n:04d}" for n in range(1, 11)], "i0999")
    out = _outside(wide, truth, items, seen, cfg).toPandas()
    assert not out.empty and list(out.columns) == wide.columns
    assert (out[S.SOURCE] == "").all() and out["x"].isna().all()
    assert out.groupby(S.USER_KEY).size().max() <= 2, "more than outside_items pairs for a user"
    assert not ((out[S.ITEM_ID] == "i0000") | (out[S.ITEM_ID] == "i0999")).any()  # candidates, touched
    missed = out.merge(truth.toPandas(), on=[S.USER_KEY, S.ITEM_ID])
    # a uniform draw hits about 40 x 2 x 10/1000 of them; adding every one gives hundreds
    assert len(missed) < 10, f"{len(missed)} missed positives added beside the draw"


@pytest.mark.spark
def test_given_set_lists_hold_every_positive_and_drawn_untouched_items(
    spark: SparkSession, tmp_path: Path
) -> None:
    """What ranking a set someone else chose looks like: each user's positives, proposed or not,
    among drawn items they never touched, every pair with its sources' scores where it had any;
    held-out users too (the choice of model is made on them)."""
    from shoprec.training.ltr_job import _given

    cfg = small_cfg(tmp_path, tmp_path, training={"ranker": {"lightgbm": {"given_negatives": 5}}})
    # i0001 proposed (a positive), i0002 a positive no source proposed, i0003 touched
    items, wide, truth, seen = _shop(spark, 300, "i0001", ["i0001", "i0002"], "i0003")
    out = _given(wide, truth, items, seen, cfg).toPandas()
    assert list(out.columns) == wide.columns and set(out[S.USER_KEY]) == set(USERS)
    held = {r[0] for r in spark.createDataFrame([(u,) for u in USERS], f"{S.USER_KEY} string")
            .where(ltr.held_out(F.col(S.USER_KEY), cfg.training.ranker.holdout)).collect()}  # fmt: skip
    assert held, "no held-out user among 40: the test shows nothing about them"
    for _user, rows in out.groupby(S.USER_KEY):
        by_item = rows.set_index(S.ITEM_ID)
        assert by_item.loc["i0001", S.SOURCE] == "als" and by_item.loc["i0001", "x"] == 1.0
        assert by_item.loc["i0002", S.SOURCE] == "" and np.isnan(by_item.loc["i0002", "x"])
        assert "i0003" not in by_item.index and len(rows) <= 2 + 5


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.e2e
def test_training_fits_lightgbm_on_the_validation_lists_and_scoring_serves_its_order(
    spark: SparkSession, small_shop: ShoprecConfig, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The whole path: lists at the validation cut, LambdaRank, the choice recorded beside the head,
    and `score` ordering every candidate source's items with it; a re-run changes nothing."""
    from shoprec import delta
    from shoprec.modeling.candidates import COOCCURRENCE, SEQUENCE, SOURCES
    from shoprec.scoring.job import score
    from shoprec.training.job import train

    cfg = small_cfg(
        Path(small_shop.paths.root),
        tiny_model_dir,
        paths={
            "root": small_shop.paths.root,
            "models": str(tmp_path / "m"),
            "checkpoints": str(tmp_path / "c"),
        },
        evaluation={"ks": [10], "models": []},
        training={
            "launcher": "single",
            "batch_size": 16,
            "max_steps": 2,
            "user_max_length": 32,
            "item_max_length": 24,
            "experiment": "ltr",
            "registered_model": "ltr-ranker",
            "ranker": {"epochs": 1, "batch_size": 64, "hidden": [8], "kind": "lightgbm"},
        },
        scoring={"retrieval_k": 20, "als_k": 10, "popular_k": 5, "new_item_k": 2, "cooc_k": 10},
    )
    trained = train(spark, cfg)
    assert trained.ranker_dir is not None
    meta = ltr.load_meta(trained.ranker_dir)
    assert meta["chosen"] == "lightgbm" and meta["lists"] > 0
    assert meta["features"] == ltr.feature_names(SOURCES)
    # an ensemble of fold members (as many as the fitted lists allow, at most ``folds``), each
    # saved beside the first
    assert 2 <= meta["folds"] == len(meta["members"]) <= cfg.training.ranker.lightgbm.folds
    assert all((trained.ranker_dir / ltr.member_file(i)).is_file() for i in range(meta["folds"]))
    assert (
        0.0 <= meta["valid_ndcg_at_10"]["lightgbm"] <= 1.0 and meta["valid_ndcg_at_10"]["torch"] is not None
    )
    # the lists hold what serving will order, the user's own past items too, labelled 0 (the
    # target is new items): a model that never saw them put them first when serving
    from shoprec.training.ltr_job import LABEL, validation_lists

    lists = validation_lists(spark, cfg, trained.model_dir)
    pdf = lists.pdf
    x = np.stack(list(pdf[rk.FEATURES]))
    had = x[:, ltr.feature_names(SOURCES).index(ltr.USER_ITEM_POSITIVE)] == 1.0
    assert had.any() and (pdf[LABEL].to_numpy()[had] == 0).all() and pdf[LABEL].sum() > 0
    # pairs no source proposed join the fitted lists only (the held-out ones stay what serving
    # orders), at most outside_items draws per user, labelled by the positives like any pair
    outside = pdf[S.SOURCE] == ""
    assert outside.any() and not (outside & pdf[ltr.HELD]).any()
    assert (x[outside.to_numpy(), ltr.feature_names(SOURCES).index(ltr.N_SOURCES)] == 0).all()
    assert pdf[outside].groupby(S.USER_KEY).size().max() <= cfg.training.ranker.lightgbm.outside_items
    assert (pdf.loc[outside, LABEL] == 0).sum() > 0
    assert meta["outside_rows"] > 0
    assert 0.0 < meta["candidate_recall"] <= 1.0
    assert len(lists.positives) >= pdf.loc[pdf[S.SOURCE] != "", LABEL].sum()
    # the given-set lists hold every positive of their users, and the model for them is kept
    # beside the served one only when it orders their held-out lists better
    assert lists.given is not None and lists.given[LABEL].sum() == len(
        lists.positives[lists.positives[S.USER_KEY].isin(set(lists.given[S.USER_KEY]))]
    )
    given = meta["given"]
    assert given is not None and given["lists"] > 0
    # one model per tree shape, the best on the held-out lists kept (the first of equals)
    shapes = given["shapes_held_out_ndcg_at_10"]
    assert list(shapes) == [f"{a}/{b}" for a, b in cfg.training.ranker.lightgbm.given_shapes]
    assert len(shapes) == 2 and given["held_out_ndcg_at_10"] == max(shapes.values()) == shapes[given["shape"]]
    assert given["shape"] == next(k for k, v in shapes.items() if v == max(shapes.values()))
    assert given["kept"] == (given["held_out_ndcg_at_10"] > given["served_model_held_out_ndcg_at_10"])
    assert ltr.exists(trained.ranker_dir / ltr.GIVEN_DIR) == given["kept"]
    loads = spark.sparkContext.accumulator(0)
    score(spark, cfg, loads=loads)
    assert loads.value == 0, "the torch head's UDF did not run: LightGBM ordered the candidates"
    staged = delta.read(spark, cfg.table("score_candidates"))
    assert staged.where(F.col(S.SOURCE).contains(COOCCURRENCE)).count() > 0
    # the sequence retriever trained with the model proposes candidates and scores every pair
    assert (trained.model_dir / "sequence" / "sequence.pt").is_file()
    assert staged.where(F.col(S.SOURCE).contains(SEQUENCE)).count() > 0
    seq_dot = x[:, ltr.feature_names(SOURCES).index(ltr.SEQUENCE_DOT)]
    assert np.isfinite(seq_dot).mean() > 0.9
    serving = delta.read(spark, cfg.table("gold_sequences")).where(F.col(S.SPLIT) == S.SERVING).count()
    recs = delta.read(spark, cfg.table("recommendations")).where(F.col(S.MODEL) == cfg.scoring.model_name)
    for sc in cfg.scoring.scenarios:
        assert recs.where(F.col(S.SCENARIO) == sc.name).select(S.USER_KEY).distinct().count() == serving
    _every_served_row_says_why(spark, cfg, recs)
    before = sorted(tuple(r) for r in recs.drop(S.GENERATED_AT, S.RUN_ID).collect())
    score(spark, cfg)
    after = delta.read(spark, cfg.table("recommendations")).where(F.col(S.MODEL) == cfg.scoring.model_name)
    assert sorted(tuple(r) for r in after.drop(S.GENERATED_AT, S.RUN_ID).collect()) == before
    _evaluation_measures_both_heads_on_full_and_sampled_ranking(spark, cfg, trained.model_dir)
    _promotion_measures_what_both_versions_serve(spark, cfg, trained.mlflow_run_id, tmp_path)


def _evaluation_measures_both_heads_on_full_and_sampled_ranking(
    spark: SparkSession, cfg: ShoprecConfig, model_dir: Path
) -> None:
    """The served lists of each rule step, and the torch head's with every rule beside the
    LightGBM model that serves, each on full and on sampled ranking."""
    from shoprec.evaluation.job import evaluate

    result = evaluate(spark, cfg, models=[], scored=(model_dir, "v"))
    rows = [r for r in result.metrics if r[S.SLICE] == "all" and r[S.MODEL] != S.CANDIDATES_MODEL]
    models = {str(r[S.MODEL]) for r in rows}
    assert any("torch head" in m for m in models), models
    for ranking in ("full", "sampled:"):
        measured = {
            str(r[S.MODEL])
            for r in rows
            if str(r[S.RANKING]).startswith(ranking)
            and r[S.METRIC] in ("recall", "hit_rate")
            and r[S.K] == 10
        }
        assert measured == models, (ranking, measured, models)
    hit = [float(r[S.VALUE]) for r in rows if r[S.METRIC] == "hit_rate" and r[S.K] == 10]
    assert all(0.0 <= h <= 1.0 for h in hit) and max(hit) > 0.0
    # the report's first screen names the served lists in plain words
    from shoprec.evaluation.report import write_report

    page = write_report(spark, cfg, result.run_id, model_dir.parent / "report.html").read_text()
    assert "Serve <b>served lists: ranker" in page, page[:2000]
    assert "served lists, torch head: ranker" in page
    # and shows a few served lists with each row's reason (scoring wrote them)
    assert "<h2>Why these items</h2>" in page
    starts = ("Because you", "Often chosen", "Popular in", "You viewed", "Goes with", "Shoppers with")
    assert any(f"<td>{w}" in page for w in starts)


def _promotion_measures_what_both_versions_serve(
    spark: SparkSession, cfg: ShoprecConfig, mlflow_run: str, tmp_path: Path
) -> None:
    """A new version is measured beside the champion on the held-out validation users: an
    identical twin ties (not promoted), one serving the torch head's order instead wins only if
    its lists score higher; the candidate's value lands in its MLflow run."""
    import json
    import shutil

    from shoprec import registry
    from shoprec.evaluation.promotion import promote_served

    c = registry.client(cfg)
    champion_dir, champion = registry.resolve(cfg)
    experiment = c.get_run(mlflow_run).info.experiment_id

    def register(variant: Path) -> str:
        run = c.create_run(experiment).info.run_id
        c.log_artifacts(run, str(variant), "model")
        return str(registry.register(cfg, run).version)

    twin = tmp_path / "twin"
    shutil.copytree(champion_dir, twin)
    same = promote_served(spark, cfg, register(twin))
    assert same.value is not None and same.value > 0, "no held-out validation user was reached"
    assert same.value == same.champion_value and not same.promoted
    assert registry.resolve(cfg)[1] == champion
    run_of = {
        str(v.version): v.run_id for v in c.search_model_versions(f"name = '{cfg.training.registered_model}'")
    }
    assert c.get_run(run_of[same.version]).data.metrics[cfg.training.promote_metric] == same.value

    meta_file = twin / rk.RANKER_DIR / ltr.LTR_META
    meta = json.loads(meta_file.read_text())
    meta["chosen"] = "torch"
    meta_file.write_text(json.dumps(meta))
    other = promote_served(spark, cfg, register(twin))
    assert other.value is not None and other.champion_value == same.value
    assert other.value != other.champion_value
    assert other.promoted == (other.value > other.champion_value)
    assert registry.resolve(cfg)[1] != champion if other.promoted else registry.resolve(cfg)[1] == champion


@pytest.mark.spark
def test_candidate_recall_counts_the_positives_each_source_and_the_union_reach(spark: SparkSession) -> None:
    from types import SimpleNamespace

    from shoprec.evaluation.job import candidate_recall
    from shoprec.modeling.candidates import ALS, EMBEDDING, SOURCES

    truth = spark.createDataFrame(
        [("u1", "a"), ("u1", "b"), ("u2", "c"), ("u2", "d")], f"{S.USER_KEY} string, {S.ITEM_ID} string"
    )
    cols = ", ".join(f"{ltr.rank_column(s)} int" for s in SOURCES)
    nulls = {s: None for s in SOURCES}

    def row(user: str, item: str, **ranks: int) -> tuple[object, ...]:
        given = {**nulls, **{s: ranks.get(s) for s in SOURCES if s in ranks}}
        return (
            user,
            item,
            "+".join(s for s in SOURCES if given[s] is not None),
            *[given[s] for s in SOURCES],
        )

    scored = spark.createDataFrame(
        [
            row("u1", "a", **{EMBEDDING: 1, ALS: 3}),
            row("u1", "x", **{ALS: 1}),
            row("u2", "c", **{EMBEDDING: 2}),
            row("u2", "y", **{EMBEDDING: 1}),
        ],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, {S.SOURCE} string, {cols}",
    )
    data = SimpleNamespace(truth=truth, split="test")
    got = {r[S.METRIC]: (r[S.K], r[S.VALUE]) for r in candidate_recall(data, scored, "v1", "r1").collect()}  # type: ignore[arg-type]
    assert got[f"recall:{EMBEDDING}"] == (2, 0.5)  # a and c of the four
    assert got[f"recall:{ALS}"] == (1, 0.25)  # a; u2 has none: 1 per user on average
    assert got["recall:union"] == (2, 0.5)


@pytest.mark.spark
def test_tastes_share_the_users_categories_and_rank_each_categorys_items(spark: SparkSession) -> None:
    """Leaf affinity is the user's share of each full category path, the item share is the item's
    share of its category's weight, and ``top`` proposes the product, best first, k per user. Kept
    shares and cut (the stream's shared signals) give the same tastes."""
    catalog = spark.createDataFrame(
        [("a", "x > ink", "b1"), ("b", "x > ink", "b2"), ("c", "x > paper", "b1"), ("d", "x > paper", None)],
        f"{S.ITEM_ID} string, {S.CATEGORY_PATH} string, {S.BRAND} string",
    )
    schema = f"{S.USER_KEY} string, {S.ITEM_ID} string, {S.WEIGHT} double, {S.EVENT_TIME} timestamp"
    everyone = spark.createDataFrame(
        [
            ("u", "a", 3.0, T0),
            ("u", "c", 1.0, T0 + timedelta(days=2)),
            ("v", "b", 1.0, T0 + timedelta(days=4)),
            ("v", "d", 3.0, T0 + timedelta(days=4)),
        ],
        schema,
    )
    mine = everyone.where(F.col(S.USER_KEY) == "u")
    t = ltr.tastes(mine, everyone, catalog)
    leaves = {r[S.CATEGORY_PATH]: r for r in t.leaves.collect()}
    assert leaves["x > ink"][ltr.LEAF_AFFINITY] == pytest.approx(0.75)
    assert leaves["x > paper"][ltr.LEAF_AFFINITY] == pytest.approx(0.25)
    assert leaves["x > paper"][ltr.LEAF_RECENCY] == pytest.approx(2.0)  # the cut is everyone's last event
    assert {r[S.BRAND]: r[ltr.BRAND_SHARE] for r in t.brands.collect()} == {"b1": pytest.approx(1.0)}
    shares = {r[S.ITEM_ID]: r[ltr.LEAF_ITEM_SHARE] for r in t.items.collect()}
    assert shares == {
        "a": pytest.approx(0.75),
        "b": pytest.approx(0.25),
        "c": pytest.approx(0.25),
        "d": pytest.approx(0.75),
    }
    top = [(r[S.ITEM_ID], r[S.RANK]) for r in t.top(3).orderBy(S.RANK).collect()]
    # a .75*.75, b .75*.25, d .25*.75 (tie with b: item id order), c .25*.25 cut by k
    assert top == [("a", 1), ("b", 2), ("d", 3)]
    assert [r[S.ITEM_ID] for r in t.top(1).collect()] == ["a"]
    # a caller that keeps the shares and the cut (the stream) gets the same tastes from them
    kept = ltr.tastes(mine, everyone, catalog, ltr.item_shares(everyone, catalog), ltr.latest(everyone))
    assert sorted(map(tuple, kept.leaves.collect())) == sorted(map(tuple, t.leaves.collect()))
    assert {r[S.ITEM_ID]: r[ltr.LEAF_ITEM_SHARE] for r in kept.items.collect()} == shares
    # a kept cut older than the user's own newest event gives way to it: never a negative age
    old_cut = ltr.latest(everyone.where(F.col(S.EVENT_TIME) <= T0))
    stale = {
        r[S.CATEGORY_PATH]: r[ltr.LEAF_RECENCY]
        for r in ltr.tastes(mine, everyone, catalog, None, old_cut).leaves.collect()
    }
    assert stale == {"x > ink": pytest.approx(2.0), "x > paper": pytest.approx(0.0)}


@pytest.mark.spark
def test_user_items_flag_the_items_with_a_positive_event(spark: SparkSession) -> None:
    """Many views weigh like one click; the flag tells them apart (the target excludes clicked
    items, not viewed ones)."""
    inter = spark.createDataFrame(
        [("u", "a", "view", 1.0), ("u", "a", "view", 1.0), ("u", "b", "click", 2.0)],
        f"{S.USER_KEY} string, {S.ITEM_ID} string, {S.EVENT_TYPE} string, {S.WEIGHT} double",
    )
    got = {r[S.ITEM_ID]: r for r in ltr.user_items(inter, ["click", "purchase"]).collect()}
    assert got["a"][ltr.USER_ITEM_WEIGHT] == got["b"][ltr.USER_ITEM_WEIGHT] == 2.0
    assert (got["a"][ltr.USER_ITEM_POSITIVE], got["b"][ltr.USER_ITEM_POSITIVE]) == (0.0, 1.0)


def _every_served_row_says_why(spark: SparkSession, cfg: ShoprecConfig, recs: DataFrame) -> None:
    """Every served row has a reason; a reason's history item is one of the user's own items (or
    the item itself, for ``seen_before``)."""
    from shoprec import delta
    from shoprec.serving import reasons as R

    kinds = {*R.KINDS, R.GOES_WITH, R.ALTERNATIVE} - {R.LINKED}
    assert recs.where(F.col(S.REASON).isNull()).count() == 0
    assert recs.where(~F.col(S.REASON)[S.REASON_KIND].isin(*kinds)).count() == 0
    assert recs.where(F.length(F.col(S.REASON)[S.REASON_TEXT]) == 0).count() == 0
    own = delta.read(spark, cfg.table("gold_interactions")).select(
        S.USER_KEY, F.col(S.ITEM_ID).alias(S.REASON_ITEM)
    )
    named = recs.where(F.col(S.REASON)[S.REASON_ITEM].isNotNull()).select(
        S.USER_KEY, S.ITEM_ID, F.col(S.REASON)[S.REASON_ITEM].alias(S.REASON_ITEM)
    )
    assert named.count() > 0, "no reason named a history item"
    assert named.join(own, [S.USER_KEY, S.REASON_ITEM], "left_anti").count() == 0
