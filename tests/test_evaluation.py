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
from shoprec.evaluation.report import screenshot, write_report

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
    # the scoring, pipeline and LTR tests share this lake (and may evaluate into it first): look at
    # this evaluation's run only
    recs = table.where((F.col(S.SCENARIO) == "eval:test") & (F.col(S.RUN_ID) == result.run_id))
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
    # the first screen says what to serve: here no trained model, so the best baseline
    assert "No trained model in this run: the best baseline is" in page
    assert page.index("class=verdict") < page.index("<h2>All models</h2>")
    _looks_drawn(screenshot(tmp_path / "r.html", tmp_path / "r.png"))
    assert "als" in page and "popularity" in page
    assert "The ranker" not in page  # no learning-to-rank model to describe
    meta = {
        "chosen": "lightgbm",
        "objective": "lambdarank",
        "lists": 428,
        "valid_ndcg_at_10": {"lightgbm": 0.29, "torch": 0.116},
        "importance_gain": {"recent_popularity": 3.0, "leaf_affinity": 1.0, "in_stock": 0.0},
    }
    page = write_report(spark, gold_cfg, first.run_id, tmp_path / "r2.html", ranker=meta).read_text()
    ranker = page[page.index("<h2>The ranker</h2>") :]
    assert "lightgbm 0.2900, torch 0.1160" in ranker and "428" in ranker
    assert ranker.index("recent_popularity</td><td>0.750") < ranker.index("leaf_affinity</td><td>0.250")
    assert "given-set model" not in ranker
    given = {"kept": True, "lists": 300, "negatives": 100, "held_out_ndcg_at_10": 0.41}
    given["served_model_held_out_ndcg_at_10"] = 0.25
    page = write_report(spark, gold_cfg, first.run_id, tmp_path / "r3.html", ranker={**meta, "given": given})
    ranker = page.read_text()[page.read_text().index("<h2>The ranker</h2>") :]
    assert "given-set model" in ranker and "0.4100, against 0.2500" in ranker
    # the tree shape taken, beside every shape tried
    given |= {"shape": "15/200", "shapes_held_out_ndcg_at_10": {"7/100": 0.4, "15/200": 0.41}}
    page = write_report(spark, gold_cfg, first.run_id, tmp_path / "r4.html", ranker={**meta, "given": given})
    ranker = page.read_text()[page.read_text().index("<h2>The ranker</h2>") :]
    assert (
        "0.4100 with trees of 15/200 leaves/rows per leaf, the best of 7/100 0.4000, 15/200 0.4100, against"
        in ranker
    )


def test_sasrec_and_the_sequence_retriever_run_through_the_same_evaluation(
    spark: SparkSession, gold_cfg: ShoprecConfig
) -> None:
    """Both sequential models train on the split's visible sequences and are judged like every
    baseline; the sequence retriever's items are its text vectors projected (one row per item)."""
    from dataclasses import replace

    from shoprec.evaluation.baselines import sequence_retriever

    short = {"dim": 16, "max_epochs": 2, "patience": 1, "max_len": 10}
    ev = gold_cfg.evaluation
    cfg = replace(
        gold_cfg,
        evaluation=replace(ev, sasrec=replace(ev.sasrec, **short), sequence=replace(ev.sequence, **short)),
    )
    data = eval_data.load(spark, cfg)
    vectors = sequence_retriever()(spark, cfg, data)
    items = vectors.items.collect()
    assert len(items) == data.catalog_size and {len(r["vector"]) for r in items} == {16}
    result = evaluate(spark, cfg, models=["sasrec", "sequence"])
    full = {
        (r[S.MODEL], r[S.METRIC]): r[S.VALUE]
        for r in result.metrics
        if r[S.RANKING] == "full" and r[S.SLICE] == "all" and r[S.K] == 10
    }
    for model in ("sasrec", "sequence"):
        assert 0.0 <= full[(model, "recall")] <= 1.0 and 0.0 <= full[(model, "ndcg")] <= 1.0


def test_published_negatives_are_reused_exactly_and_a_file_of_strangers_is_refused(
    spark: SparkSession, gold_cfg: ShoprecConfig, tmp_path: Path
) -> None:
    """``evaluation.sampled``: a benchmark's own negatives per test event, read through the column
    mapping with raw user ids (pseudonymised like silver's); a file none of whose users is in the
    split (another pseudonymisation key, a wrong column) stops with a message, not empty metrics."""
    from dataclasses import replace

    from shoprec.config import SampledSourceConfig
    from shoprec.errors import ShoprecError
    from shoprec.etl.forget import pseudonym_of
    from shoprec.etl.pseudonymise import load_key

    key = load_key(gold_cfg.privacy)
    raw = [
        r[0]
        for r in delta.read(spark, gold_cfg.table("bronze_events")).select(S.USER_ID).distinct().collect()
    ]
    raw_of = {pseudonym_of(u, key): u for u in raw if u is not None}
    truth = eval_data.load(spark, gold_cfg).truth.select(S.USER_KEY, S.ITEM_ID).distinct().limit(6).collect()
    assert truth
    items = [
        r[0]
        for r in delta.read(spark, gold_cfg.table("gold_item_features")).select(S.ITEM_ID).limit(9).collect()
    ]
    lines = ["user\titem\tnegs"]
    for r in truth:
        negs = [i for i in items if i != r[S.ITEM_ID]][:5]
        lines.append(f"{raw_of[r[S.USER_KEY]]}\t{r[S.ITEM_ID]}\t{','.join(negs)}")
    path = tmp_path / "test.tsv"
    path.write_text("\n".join(lines) + "\n")
    source = SampledSourceConfig(
        split="test",
        path=str(path),
        options={"sep": "\t", "header": "true"},
        schema_ddl="user STRING, item STRING, negs STRING",
        columns={"user_id": "user", "item_id": "item", "negatives": "split(negs, ',')"},
    )
    cfg = replace(gold_cfg, evaluation=replace(gold_cfg.evaluation, sampled=(source,)))
    data = eval_data.load(spark, cfg)
    assert data.sampled_label == "sampled:given"
    events = data.sampled.groupBy("event").agg(
        F.sum(F.col("is_positive").cast("int")).alias("pos"), F.count(F.lit(1)).alias("n")
    )
    assert sorted((r["pos"], r["n"]) for r in events.collect()) == [(1, 6)] * len(truth)

    no_schema = replace(cfg, evaluation=replace(cfg.evaluation, sampled=(replace(source, schema_ddl=None),)))
    with pytest.raises(ShoprecError, match=r"CSV cannot hold the column\(s\) negatives"):
        eval_data.load(spark, no_schema)
    strangers = tmp_path / "strangers.tsv"
    strangers.write_text("user\titem\tnegs\nnobody-1\ti1\ti2,i3\n")
    cfg = replace(cfg, evaluation=replace(cfg.evaluation, sampled=(replace(source, path=str(strangers)),)))
    with pytest.raises(ShoprecError, match="none of its users is a user of the test split"):
        eval_data.load(spark, cfg)


def _looks_drawn(png: Path) -> None:
    """A headless Chromium rendered the page: a full-size image with text and charts on it, not a
    blank or an error page (mostly white, with dark and coloured pixels in its top half)."""
    from matplotlib.image import imread

    img = imread(png)[..., :3]
    assert img.shape[:2] == (1400, 1300), img.shape
    top = img[: img.shape[0] // 2]
    assert (top.mean(axis=2) < 0.3).mean() > 0.002, "no text on the first screen"
    # the verdict's bars fill a good part of the first screen; text alone covers a few percent
    assert (top.mean(axis=2) < 0.8).mean() > 0.05, "no chart on the first screen"


def test_drawn_sampled_events_leave_out_targets_the_user_already_had(
    spark: SparkSession, gold_cfg: ShoprecConfig
) -> None:
    """With ``exclude_seen``, a drawn sampled event whose target the user already had is left out,
    as the full ranking's truth leaves it out: counted, it was a miss for every list that keeps
    items the user bought off (the already-bought rule looked as if it cost a fifth of HR@10)."""
    data = eval_data.load(spark, gold_cfg)
    assert data.exclude is not None and data.sampled_label.endswith("drawn")
    examples = delta.read(spark, gold_cfg.table("gold_training_examples")).where(F.col(S.SPLIT) == S.TEST)
    targets = examples.select(S.USER_KEY, F.col(S.POSITIVE_ITEM).alias(S.ITEM_ID))
    repeats = targets.join(data.exclude, [S.USER_KEY, S.ITEM_ID], "left_semi").count()
    assert repeats > 0, "the shop has no repeat targets: the check below could not fail"
    positives = data.sampled.where(F.col("is_positive")).select(S.USER_KEY, S.ITEM_ID)
    assert positives.join(data.exclude, [S.USER_KEY, S.ITEM_ID], "left_semi").count() == 0
    assert positives.count() == targets.count() - repeats
