"""Batch scoring end to end on the small shop with a tiny trained model: lists for every serving
user, the ranker loaded once per worker process, idempotent MERGE, incremental refresh, errors."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from conftest import small_cfg
from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.scoring import embeddings
from shoprec.scoring.job import score
from shoprec.serving.lists import check_candidates
from shoprec.training.job import train

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def shop(
    spark: SparkSession,
    small_shop: ShoprecConfig,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> ShoprecConfig:
    models = tmp_path_factory.mktemp("scoring-models")
    cfg = small_cfg(
        Path(small_shop.paths.root),
        tiny_model_dir,
        paths={"root": small_shop.paths.root, "models": str(models), "checkpoints": str(models / "ckpt")},
        evaluation={"ks": [10], "models": []},
        training={
            "launcher": "single",
            "batch_size": 16,
            "learning_rate": 1e-3,
            "user_max_length": 48,
            "item_max_length": 32,
            "max_steps": 4,
            "experiment": "scoring",
            "registered_model": "scoring-ranker",
            # the torch head's UDF is what this module tests (tests/test_ltr.py scores with LightGBM)
            "ranker": {"epochs": 1, "batch_size": 64, "hidden": [16], "kind": "torch"},
        },
        scoring={"retrieval_k": 30, "als_k": 10, "popular_k": 5, "new_item_k": 5, "batch_size": 64},
    )
    train(spark, cfg)
    return cfg


def _table(spark: SparkSession, cfg: ShoprecConfig) -> list[tuple[object, ...]]:
    recs = delta.read(spark, cfg.table("recommendations")).where(F.col(S.MODEL) == cfg.scoring.model_name)
    return sorted(tuple(r) for r in recs.collect())


def _staged_pairs_keep_their_flags_and_band_gap(spark: SparkSession, shop: ShoprecConfig) -> None:
    """What crossed the ranker in the low bits of each pair's code, and the band gap decoded from
    it, are each pair's own."""
    from shoprec.modeling import candidates
    from shoprec.modeling import ranker as rk
    from shoprec.scoring.job import _serving
    from shoprec.serving import rules as R

    staged = delta.read(spark, shop.table("score_candidates"))
    bought = (
        delta.read(spark, shop.table("gold_interactions"))
        .where(F.col(S.EVENT_TYPE) == "purchase")
        .select(S.USER_KEY, S.ITEM_ID, F.lit(True).alias("truth"))
        .distinct()
    )
    truth = F.coalesce("truth", F.lit(False)).alias("truth")
    checked = staged.join(bought, [S.USER_KEY, S.ITEM_ID], "left").select(
        S.USER_KEY, S.ITEM_ID, S.SOURCE, R.BOUGHT, R.BAND_GAP, truth
    )
    assert checked.where(F.col("truth")).count() > 0, "no candidate was already bought: nothing checked"
    assert checked.where(F.col(R.BOUGHT) != F.col("truth")).count() == 0
    valid = [
        "+".join(c)
        for n in range(1, len(candidates.SOURCES) + 1)
        for c in itertools.combinations(candidates.SOURCES, n)
    ]
    assert {r[0] for r in checked.select(S.SOURCE).distinct().collect()} <= set(valid)
    feats = rk.pair_features(  # training's features of the same pairs
        checked.select(S.USER_KEY, S.ITEM_ID, R.BAND_GAP),
        _serving(spark, shop, "gold_item_features"),
        _serving(spark, shop, "gold_user_profiles"),
    )
    gap = F.col(rk.FEATURES)[rk.FEATURE_NAMES.index("price_band_gap")]
    assert feats.where(gap != F.col(R.BAND_GAP)).count() == 0
    assert feats.select(R.BAND_GAP).distinct().count() > 1


def test_every_serving_user_gets_a_list_per_scenario_and_a_rerun_changes_nothing(
    spark: SparkSession, shop: ShoprecConfig
) -> None:
    loads = spark.sparkContext.accumulator(0)
    first = score(spark, shop, loads=loads)
    users = delta.read(spark, shop.table("gold_sequences")).where(F.col(S.SPLIT) == S.SERVING).count()
    assert first.users == users and first.candidates >= users * 30
    recs = delta.read(spark, shop.table("recommendations")).where(F.col(S.MODEL) == "shoprec")
    listed = {r[0]: r[1] for r in recs.groupBy(S.SCENARIO).agg(F.countDistinct(S.USER_KEY)).collect()}
    assert first.lists == listed, "each scenario's count is the users listed in it"
    for sc in shop.scoring.scenarios:
        lists = (
            recs.where(F.col(S.SCENARIO) == sc.name)
            .groupBy(S.USER_KEY)
            .agg(
                F.count(F.lit(1)).alias("n"),
                F.max(S.RANK).alias("top"),
                F.countDistinct(S.ITEM_ID).alias("d"),
            )
        )
        assert lists.count() == users
        assert (
            lists.where(
                (F.col("n") != F.col("top")) | (F.col("d") != F.col("n")) | (F.col("n") > sc.k)
            ).count()
            == 0
        )
    sources = {r[0] for r in recs.select(S.SOURCE).distinct().collect()}
    assert any("embedding" in s for s in sources) and len(sources) > 1
    assert recs.where(F.size(S.RULES) > 0).count() > 0, "no business rule moved anything"
    assert recs.select(S.MODEL_VERSION).distinct().collect()[0][0] == first.model_version
    staged = {r[0] for r in delta.read(spark, shop.table("score_candidates")).select(S.RUN_ID).collect()}
    assert staged == {first.run_id}, "the staging table keeps only the latest run"
    _staged_pairs_keep_their_flags_and_band_gap(spark, shop)
    assert 1 <= first.ranker_loads <= 2, first.ranker_loads  # local[2]: at most two Python workers

    before = _table(spark, shop)
    version = delta.for_location(spark, shop.table("recommendations")).history(1).select("version").first()[0]
    again = score(spark, shop)
    assert again.run_id == first.run_id
    assert _table(spark, shop) == before, "re-running the same run changed the table"
    merges = (
        delta.for_location(spark, shop.table("recommendations"))
        .history()
        .where(F.col("version") > version)
        .where(F.col("operation") == "MERGE")
        .select("operationMetrics")
        .collect()
    )
    assert merges and all(int(m[0].get("numTargetRowsUpdated", "0")) == 0 for m in merges)


def test_the_ranker_loads_once_per_worker_process_however_many_batches(
    spark: SparkSession, shop: ShoprecConfig, tmp_path: Path
) -> None:
    import shutil

    from shoprec.modeling import ranker as rk
    from shoprec.serving import model as scoring_model
    from shoprec.serving.lists import resolve_model

    model_dir, _ = resolve_model(shop)
    fresh = tmp_path / "ranker"  # a path no worker has cached yet
    shutil.copytree(model_dir / rk.RANKER_DIR, fresh)
    dim = rk.load(fresh).model.dim
    # 200 users x 10 candidates, each user's list in one row; item vectors in a broadcast matrix
    rng = np.random.default_rng(0)
    user_vecs = rng.normal(size=(200, dim)).astype(np.float32)
    item_vecs = rng.normal(size=(30, dim)).astype(np.float32)
    # each pair carries its code (band gap and known, its positions among the user's taste
    # shares, and caller's flags in the low bits); its item's features come from a broadcast by row
    n_pairs = 2000
    item_feats = rng.random(size=(30, len(rk.ITEM_FEATURE_NAMES))).astype(np.float32)
    items_of = rng.integers(0, 30, size=n_pairs)
    shares = [rng.random(size=rng.integers(0, 4)).astype(np.float32).tolist() for _ in range(200)]
    brand_shares = [rng.random(size=2).astype(np.float32).tolist() for _ in range(200)]
    cat_pos = np.array([rng.integers(0, len(shares[i // 10]) + 1) for i in range(n_pairs)])
    brand_pos = rng.integers(0, 3, size=n_pairs)
    gap2, known = rng.integers(0, 3, size=n_pairs), rng.integers(0, 2, size=n_pairs)
    flags = np.arange(n_pairs) % 200
    codes = rk.encode_pair_code(gap2, known, cat_pos, brand_pos) | flags
    pair_feats = np.stack(
        [
            gap2 / 2,
            known,
            [shares[i // 10][p - 1] if p else 0.0 for i, p in enumerate(cat_pos)],
            [brand_shares[i // 10][p - 1] if p else 0.0 for i, p in enumerate(brand_pos)],
        ],
        axis=1,
    ).astype(np.float32)
    feats = rk.full_features(pair_feats, item_feats[items_of])
    for i in (0, 1999):  # each value in the model's order, from the side it belongs to
        for j, name in enumerate(rk.FEATURE_NAMES):
            side = (
                pair_feats[i, rk.PAIR_FEATURE_NAMES.index(name)]
                if name in rk.PAIR_FEATURE_NAMES
                else item_feats[items_of[i], rk.ITEM_FEATURE_NAMES.index(name)]
            )
            assert feats[i, j] == side
    rows = [
        (
            f"u{u:03d}",
            user_vecs[u].tolist(),
            items_of[10 * u : 10 * u + 10].tolist(),
            codes[10 * u : 10 * u + 10].tolist(),
            shares[u] or None,  # a user without tastes: no list at all
            brand_shares[u],
        )
        for u in range(200)
    ]
    df = spark.createDataFrame(
        rows,
        f"{S.USER_KEY} string, {rk.USER_VECTOR} array<float>, {scoring_model.ITEM_INDEX} array<int>, "
        f"{rk.PAIR_CODE} array<int>, {rk.CATEGORY_SHARES} array<float>, {rk.BRAND_SHARES} array<float>",
    ).repartition(8)
    loads = spark.sparkContext.accumulator(0)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "5")
    try:
        bc, bc_feats = spark.sparkContext.broadcast(item_vecs), spark.sparkContext.broadcast(item_feats)
        # 3 users per slice
        out = scoring_model.score(df, str(fresh), bc, batch_size=4, loads=loads, item_features=bc_feats)
        assert out.columns == [
            S.USER_KEY,
            scoring_model.ITEM_INDEX,
            rk.PAIR_CODE,
            rk.P_CLICK,
            rk.P_PURCHASE,
            scoring_model.LOADER_PID,
        ]
        got = out.collect()
        pids = {r[scoring_model.LOADER_PID] for r in got}
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    # 8 tasks x several Arrow batches each, but one load per Python worker (module cache)
    assert loads.value == len(pids) and 1 <= len(pids) <= 2, (loads.value, pids)
    # every pair kept, with its own user, code and the heads' probabilities for its own inputs
    import torch

    got = sorted(got, key=lambda r: (r[S.USER_KEY], r[rk.PAIR_CODE] & 255))
    assert [r[rk.PAIR_CODE] for r in got] == codes.tolist()
    assert [r[S.USER_KEY] for r in got] == [f"u{i // 10:03d}" for i in range(n_pairs)]
    assert [r[scoring_model.ITEM_INDEX] for r in got] == items_of.tolist()
    with torch.no_grad():
        want = torch.sigmoid(
            rk.load(fresh).model(
                torch.from_numpy(np.repeat(user_vecs, 10, axis=0)),
                torch.from_numpy(item_vecs[items_of]),
                torch.from_numpy(feats),
            )
        ).numpy()
    np.testing.assert_allclose([[r[rk.P_CLICK], r[rk.P_PURCHASE]] for r in got], want, rtol=1e-4, atol=1e-6)


def test_a_catalog_over_the_broadcast_bound_is_retrieved_and_ranked_in_item_shards(
    spark: SparkSession, shop: ShoprecConfig
) -> None:
    """With ``evaluation.broadcast_mib`` under the item matrix's size, candidates come from item-id
    shards and the ranker scores each shard's pairs under that shard's broadcast alone: the same
    candidates and the same scores as one broadcast of the whole catalog."""
    from shoprec.modeling import retrieval
    from shoprec.serving.lists import AsOf, resolve_model, score_view, user_candidates

    model_dir, version = resolve_model(shop)
    embeddings.refresh(spark, shop, str(model_dir), version, incremental=True)
    items = delta.read(spark, shop.table("gold_item_features")).where(F.col(S.SPLIT) == S.SERVING)
    vectors = embeddings.vectors(spark, shop, version).localCheckpoint()
    _, mib = retrieval.matrix_mib(vectors)
    only = delta.read(spark, shop.table("gold_sequences")).select(S.USER_KEY).distinct().limit(40)
    view = AsOf(
        items.localCheckpoint(),
        delta.read(spark, shop.table("gold_user_profiles")).where(F.col(S.SPLIT) == S.SERVING),
        delta.read(spark, shop.table("gold_sequences")).where(F.col(S.SPLIT) == S.SERVING),
        delta.read(spark, shop.table("gold_interactions")),
        vectors,
        only.localCheckpoint(),
    )

    def scored(cfg: ShoprecConfig) -> dict[tuple[str, str], tuple[str, float, float]]:
        pool = user_candidates(spark, cfg, model_dir, view)
        rows = score_view(spark, cfg, model_dir, view, pool, head="torch").collect()
        return {(r[S.USER_KEY], r[S.ITEM_ID]): (r[S.SOURCE], r["p_click"], r["p_purchase"]) for r in rows}

    whole = scored(shop)
    assert len({u for u, _ in whole}) >= 20
    sharded = scored(replace(shop, evaluation=replace(shop.evaluation, broadcast_mib=mib / 3)))
    assert sharded.keys() == whole.keys()
    for pair, (source, click, purchase) in whole.items():
        assert sharded[pair][0] == source, pair
        assert sharded[pair][1:] == pytest.approx((click, purchase), rel=1e-4, abs=1e-6), pair


def test_a_candidate_list_out_of_step_with_its_codes_or_shares_names_the_user(
    spark: SparkSession, shop: ShoprecConfig
) -> None:
    import pyarrow as pa

    from shoprec.modeling import ranker as rk
    from shoprec.serving import model as scoring_model
    from shoprec.serving.lists import resolve_model

    part = pa.RecordBatch.from_pydict(
        {
            S.USER_KEY: ["u1", "u2"],
            scoring_model.ITEM_INDEX: [[0, 1], [2]],
            rk.PAIR_CODE: [[0, 0], [0, 0]],
        }
    )
    rows = part.column(scoring_model.ITEM_INDEX)
    assert len(scoring_model._aligned(part.slice(0, 1), rows.slice(0, 1), rk.PAIR_CODE)) == 2
    with pytest.raises(ShoprecError, match=r"user 'u2': _pair_code holds 2 values for 1 candidates"):
        scoring_model._aligned(part, rows, rk.PAIR_CODE)
    # a code pointing past the user's shares, inside the UDF: the user is named
    model_dir, _ = resolve_model(shop)
    dim = rk.load(model_dir / rk.RANKER_DIR).model.dim
    beyond = 2 << (rk.CODE_SHIFT + 3)  # the second category share; the user has one
    df = spark.createDataFrame(
        [("u7", [0.0] * dim, [0], [beyond], [0.5], [])],
        f"{S.USER_KEY} string, {rk.USER_VECTOR} array<float>, {scoring_model.ITEM_INDEX} array<int>, "
        f"{rk.PAIR_CODE} array<int>, {rk.CATEGORY_SHARES} array<float>, {rk.BRAND_SHARES} array<float>",
    )
    sc = spark.sparkContext
    bc = sc.broadcast(np.zeros((1, dim), dtype=np.float32))
    bc_feats = sc.broadcast(np.zeros((1, len(rk.ITEM_FEATURE_NAMES)), dtype=np.float32))
    scored = scoring_model.score(df, str(model_dir / rk.RANKER_DIR), bc, item_features=bc_feats)
    with pytest.raises(Exception, match=r"user 'u7': a pair code points at entry 2 of _category_shares"):
        scored.collect()
    with pytest.raises(ShoprecError, match=r"needs an array column _brand_shares"):
        scoring_model.score(
            df.drop(rk.BRAND_SHARES), str(model_dir / rk.RANKER_DIR), bc, item_features=bc_feats
        )


def test_a_pairs_sources_survive_the_ranker_as_bits(spark: SparkSession) -> None:
    from shoprec.modeling.candidates import SOURCES, source_code, source_name

    combos = ["+".join(c) for n in range(1, len(SOURCES) + 1) for c in itertools.combinations(SOURCES, n)]
    df = spark.createDataFrame([(c,) for c in combos], "source string")
    got = df.select("source", source_code(F.col("source")).alias("code")).select(
        "source", "code", source_name(F.col("code")).alias("back")
    )
    rows = got.collect()
    assert [r["back"] for r in rows] == combos
    assert len({r["code"] for r in rows}) == len(combos) == 2 ** len(SOURCES) - 1


@pytest.mark.e2e
def test_a_changed_item_is_re_embedded_alone_and_only_its_users_are_rescored(
    spark: SparkSession, shop: ShoprecConfig, tmp_path: Path
) -> None:
    import json
    import shutil

    from shoprec.config import from_dict

    # on a copy of the lake: other modules read the shared small shop's item features
    shutil.copytree(shop.paths.root, tmp_path / "root")
    settings = shop.to_dict()
    settings.pop("env")
    settings["paths"] = {**settings["paths"], "root": str(tmp_path / "root")}
    shop = from_dict(json.loads(json.dumps(settings, default=str)))
    score(spark, shop)
    items = delta.for_location(spark, shop.table("gold_item_features"))
    # the listed item the fewest users have (an item on every list would make everyone affected)
    target = (
        delta.read(spark, shop.table("recommendations"))
        .where(F.col(S.MODEL) == "shoprec")
        .groupBy(S.ITEM_ID)
        .agg(F.countDistinct(S.USER_KEY).alias("n"))
        .orderBy("n", S.ITEM_ID)
        .first()[0]
    )
    items.update(
        (F.col(S.SPLIT) == S.SERVING) & (F.col(S.ITEM_ID) == target),
        {S.ITEM_TEXT: F.concat(F.col(S.ITEM_TEXT), F.lit(" now in a new colour"))},
    )
    result = score(spark, shop, incremental=True)
    assert result.embedded_items == 1
    serving_users = delta.read(spark, shop.table("gold_sequences")).where(F.col(S.SPLIT) == S.SERVING).count()
    assert 0 < result.users < serving_users
    emb = embeddings.vectors(spark, shop, result.model_version)
    assert (
        emb.count()
        == delta.read(spark, shop.table("gold_item_features")).where(F.col(S.SPLIT) == S.SERVING).count()
    )
    again = score(spark, shop, incremental=True)
    assert again.embedded_items == 0 and again.users == 0  # nothing changed since


def test_bad_inputs_stop_with_a_clear_message(
    spark: SparkSession, shop: ShoprecConfig, tmp_path: Path
) -> None:
    missing = replace(shop, scoring=replace(shop.scoring, model_path=str(tmp_path / "v-missing")))
    with pytest.raises(ShoprecError, match="model version 'v-missing' has no ranker"):
        score(spark, missing)
    unknown = replace(shop, scoring=replace(shop.scoring, model_uri="models:/scoring-ranker/99"))
    with pytest.raises(ShoprecError, match=r"no model at models:/scoring-ranker/99 .*run `shoprec train`"):
        score(spark, unknown)
    items = delta.read(spark, shop.table("gold_item_features")).where(F.col(S.SPLIT) == S.SERVING)
    empty = spark.createDataFrame([], f"{S.USER_KEY} string, {S.ITEM_ID} string, {S.SOURCE} string")
    with pytest.raises(ShoprecError, match="candidate set is empty"):
        check_candidates(empty, items)
    ghost = spark.createDataFrame([("u", "no-such-item", "embedding")], empty.schema)
    with pytest.raises(ShoprecError, match=r"absent from the serving catalog \(e\.g\. no-such-item\)"):
        check_candidates(ghost, items)


def _subprocess_score(conf: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "shoprec.cli", "score", "--env", "t", "--conf-dir", str(conf)]


def _lake_commits(root: Path) -> list[Path]:
    """Every Delta commit under ``root``, oldest first."""
    files = [p for p in root.rglob("_delta_log/*.json") if not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.stat().st_mtime_ns)


@pytest.mark.e2e
def test_a_score_job_killed_after_a_commit_and_rerun_equals_an_uninterrupted_one(
    spark: SparkSession, shop: ShoprecConfig, tmp_path: Path
) -> None:
    """Kill a real ``shoprec score`` right after the N-th Delta commit it makes (any table: item
    embeddings, staging, the lists' MERGE), run it again, and compare the recommendations and
    item embeddings with the same run on an untouched copy of the lake. The default tier kills
    after the first MERGE into ``recommendations`` (one scenario new, one old);
    ``SHOPREC_KILL_SWEEP=all`` kills after every commit in turn."""
    import json
    import logging
    import os
    import shutil
    import signal
    import subprocess
    import time

    import yaml

    from shoprec.config import from_dict

    score(spark, shop)  # the lists as they stand before the new run
    before = tmp_path / "before"
    shutil.copytree(shop.paths.root, before)
    settings = shop.to_dict()
    settings.pop("env")
    # the test session's shuffle layout: ALS factors (hence candidates) depend on how Spark
    # partitions the ratings, so the killed run and the clean one must partition alike
    settings["spark"]["shuffle_partitions"] = int(spark.conf.get("spark.sql.shuffle.partitions") or 2)
    # a different run: shorter app lists, category cap instead of MMR on web
    settings["scoring"]["scenarios"] = [
        {**settings["scoring"]["scenarios"][0], "k": 5},
        {**settings["scoring"]["scenarios"][1], "diversity": "category_cap", "category_cap": 2},
    ]

    def at(root: Path) -> dict[str, Any]:
        return json.loads(
            json.dumps({**settings, "paths": {**settings["paths"], "root": str(root)}}, default=str)
        )

    def rows(cfg: ShoprecConfig) -> dict[str, list[tuple[object, ...]]]:
        recs = delta.read(spark, cfg.table("recommendations")).where(F.col(S.MODEL) == "shoprec")
        emb = delta.read(spark, cfg.table("item_embeddings")).drop(embeddings.EMBEDDED_AT)
        return {
            "recommendations": sorted(tuple(r) for r in recs.drop(S.GENERATED_AT).collect()),
            "item_embeddings": sorted(
                (*r[:-1], tuple(round(v, 5) for v in r[-1])) for r in emb.select(*emb.columns).collect()
            ),
        }

    clean_root = tmp_path / "clean"
    shutil.copytree(before, clean_root)
    old = set(_lake_commits(clean_root))
    clean = from_dict(at(clean_root))
    score(spark, clean)
    made = [str(p.relative_to(clean_root)) for p in _lake_commits(clean_root) if p not in old]
    expected = rows(clean)
    first_merge = next(i for i, c in enumerate(made, 1) if "recommendations/_delta_log" in c)
    sweep = os.environ.get("SHOPREC_KILL_SWEEP") == "all"
    points = range(1, len(made) + 1) if sweep else [first_merge]
    log = logging.getLogger(__name__)
    log.info("score makes %d commits: %s; killing after %s", len(made), made, list(points))
    repo = Path(__file__).resolve().parents[1]
    failures = []
    for n in points:
        root = tmp_path / f"k{n}"
        shutil.copytree(before, root)
        conf = tmp_path / f"conf{n}"
        conf.mkdir()
        (conf / "t.yaml").write_text(yaml.safe_dump(at(root)))
        start = len(_lake_commits(root))
        proc = subprocess.Popen(
            _subprocess_score(conf), cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 400
        while len(_lake_commits(root)) < start + n and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert len(_lake_commits(root)) == start + n, f"killed after commit {n} ({made[n - 1]})"
        done = subprocess.run(_subprocess_score(conf), cwd=repo, capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        got = rows(from_dict(at(root)))
        failures += [f"after commit {n} ({made[n - 1]}): {t} differ" for t in got if got[t] != expected[t]]
        if n == first_merge:
            app = delta.read(spark, from_dict(at(root)).table("recommendations")).where(
                F.col(S.SCENARIO) == "app"
            )
            assert app.agg(F.max(S.RANK)).first()[0] == 5, "the shorter list replaced the longer one whole"
    assert not failures, "killed score runs that a re-run did not repair:\n" + "\n".join(failures)


def test_training_registers_the_model_and_promote_moves_the_champion_only_when_better(
    shop: ShoprecConfig,
) -> None:
    """Scoring loads ``models:/scoring-ranker@champion``; a newer version becomes champion only if
    its evaluation metric beats the champion's (or with force). Ends with the first champion back."""
    from shoprec import registry
    from shoprec.modeling.ranker import RANKER_DIR, RANKER_FILE

    c = registry.client(shop)
    name, metric = shop.training.registered_model, shop.training.promote_metric
    first = c.get_model_version_by_alias(name, "champion")
    path, version = registry.resolve(shop)
    assert version == f"{name}-v{first.version}"
    assert (path / RANKER_DIR / RANKER_FILE).is_file()
    c.log_metric(first.run_id, metric, 0.10)

    experiment = c.get_run(first.run_id).info.experiment_id
    unevaluated = c.create_run(experiment).info.run_id
    c.log_artifacts(unevaluated, str(path), "model")
    v2 = registry.register(shop, unevaluated)
    with pytest.raises(ShoprecError, match=f"has no metric {metric}"):
        registry.promote(shop)
    better = c.create_run(experiment).info.run_id
    c.log_artifacts(better, str(path), "model")
    c.log_metric(better, metric, 0.20)
    v3 = registry.register(shop, better)
    assert c.get_model_version_by_alias(name, "champion").version == first.version  # not yet
    promoted = registry.promote(shop)  # the newest: v3
    assert promoted.promoted and promoted.version == str(v3.version) and promoted.champion_value == 0.10
    assert registry.resolve(shop)[1] == f"{name}-v{v3.version}"
    back = registry.promote(shop, version=str(first.version))
    assert not back.promoted  # 0.10 does not beat 0.20
    assert c.get_model_version_by_alias(name, "champion").version == v3.version
    assert registry.promote(shop, version=str(v2.version), force=True).promoted
    assert registry.promote(shop, version=str(first.version), force=True).promoted
    assert registry.resolve(shop)[1] == version
    with pytest.raises(ShoprecError, match=r"expected models:/NAME@ALIAS"):
        registry.resolve(shop, "models:/scoring-ranker")
    with pytest.raises(ShoprecError, match=r"no model at models:/nobody@champion"):
        registry.resolve(shop, "models:/nobody@champion")


def test_merge_lists_counts_the_users_each_scenario_lists_in_one_commit(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A scenario's rules can leave a user without a list: its count is its own, not the users
    scored. Every scenario's lists go in with one MERGE (one commit), and a later run whose lists
    are shorter deletes the ranks it no longer fills, in each scenario alone."""
    from shoprec.config import ScenarioConfig, from_dict
    from shoprec.scoring.job import merge_lists
    from shoprec.serving.lists import LIST_SCHEMA

    cfg = from_dict({"paths": {"root": str(tmp_path)}})

    def lists(users: list[str], ranks: tuple[int, ...] = (1, 2)) -> DataFrame:
        rows: list[tuple[Any, ...]] = [
            (u, f"i{r}", r, 1.0 / r, "embedding", []) for u in users for r in ranks
        ]
        return spark.createDataFrame(rows, LIST_SCHEMA)

    app, web = ScenarioConfig(name="app", k=2), ScenarioConfig(name="web", k=2)
    counts = merge_lists(
        spark, cfg, [(app, lists(["u1", "u2", "u3"])), (web, lists(["u1", "u2"]))], "v1", "r1"
    )
    location = cfg.table("recommendations")
    recs = delta.read(spark, location)
    stored = {r[0]: r[1] for r in recs.groupBy(S.SCENARIO).agg(F.countDistinct(S.USER_KEY)).collect()}
    assert counts == stored == {"app": 3, "web": 2}
    before = delta.for_location(spark, location).history(1).select("version").first()
    counts = merge_lists(spark, cfg, [(app, lists(["u1"], (1,))), (web, lists([]))], "v1", "r2")
    after = delta.for_location(spark, location).history(1).select("version").first()
    assert before is not None and after is not None and after[0] == before[0] + 1
    assert counts == {"app": 1, "web": 0}
    rows = {(r[S.SCENARIO], r[S.USER_KEY], r[S.RANK]) for r in delta.read(spark, location).collect()}
    # u1's app list lost rank 2; every other list, web's too, is as the first run left it
    assert rows == {
        ("app", "u1", 1),
        ("app", "u2", 1),
        ("app", "u2", 2),
        ("app", "u3", 1),
        ("app", "u3", 2),
    } | {("web", u, r) for u in ("u1", "u2") for r in (1, 2)}
