"""Fit the learning-to-rank model on the candidate lists of the validation cut.

The lists are what serving will order: the same generator (:mod:`shoprec.modeling.candidates`),
the same retriever, ALS and co-occurrence, run on what the validation split could see, each list
labelled with the user's held-out validation positives. A share of the users (``ranker.holdout``,
by hash) is kept out of every fit: LightGBM's fold ensemble is fitted and early-stopped on the
others, each objective's ensemble is measured on the held-out lists, and so is the torch head, so
``ranker.kind: auto`` keeps whichever orders them better (NDCG@10).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoprec import delta, splits
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.modeling import candidates, encoder, ltr
from shoprec.modeling import ranker as rk
from shoprec.modeling.text import history_texts
from shoprec.modeling.towers import load_meta

log = logging.getLogger(__name__)
LABEL = "label"
#: Rounds for a shop with too few lists for two folds and none held out (nothing to stop on).
SMALL_ROUNDS = 50


def _fit_members(
    x: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    users: np.ndarray[Any, Any],
    fit_rows: np.ndarray[Any, Any],
    held_rows: np.ndarray[Any, Any],
    scored: np.ndarray[Any, Any] | None,
    names: list[str],
    params: dict[str, Any],
    cfg: ShoprecConfig,
) -> tuple[ltr.Fitted, np.ndarray[Any, Any], bool]:
    """The fold ensemble (:func:`shoprec.modeling.ltr.fit_folds`) on the ``fit_rows``, the score
    of each of them by a member that did not see its user, and True; with too few lists for two
    folds, one model early-stopped on the ``held_rows`` (``SMALL_ROUNDS`` without any), its
    in-sample scores and False."""
    g = cfg.training.ranker.lightgbm
    folds = min(g.folds, len(np.unique(users[fit_rows])))
    if folds >= 2:
        sub = None if scored is None else scored[fit_rows]
        fitted, oof = ltr.fit_folds(
            x[fit_rows], y[fit_rows], users[fit_rows], names, params, g.rounds, g.early_stopping,
            cfg.training.seed, folds, sub,
        )  # fmt: skip
        return fitted, oof, True
    rows = fit_rows | held_rows
    rounds = g.rounds if held_rows.any() else SMALL_ROUNDS
    stop, seed = g.early_stopping, cfg.training.seed
    fitted = ltr.fit(x[rows], y[rows], users[rows], held_rows[rows], names, params, rounds, stop, seed)
    return fitted, fitted.predict(x[fit_rows]), False


@dataclass(frozen=True)
class LtrResult:
    chosen: str  # "lightgbm" or "torch"
    lightgbm_ndcg: float
    torch_ndcg: float | None
    lists: int
    rows: int
    seconds: float
    importance: dict[str, float]


@dataclass(frozen=True)
class Lists:
    """The labelled lists at the validation cut and what they were made with."""

    #: One row per (user, item) pair, sorted by user: candidates, and drawn pairs no source proposed.
    pdf: pd.DataFrame
    user_vectors: DataFrame
    item_vectors: DataFrame
    #: Every validation positive of the capped users in the catalog (user, item): the candidate
    #: recall's denominator, since the lists hold only the positives a source reached or a draw hit.
    positives: pd.DataFrame
    #: Given-set lists (:func:`_given`), in ``pdf``'s columns; None with ``given_negatives: 0``.
    given: pd.DataFrame | None = None


def _split(spark: SparkSession, cfg: ShoprecConfig, name: str, split: str) -> DataFrame:
    return delta.read(spark, cfg.table(name)).where(F.col(S.SPLIT) == split)


def validation_lists(spark: SparkSession, cfg: ShoprecConfig, model_dir: Path) -> Lists:
    """The labelled candidate lists at the validation cut, sorted by user (pandas), the user
    and item vectors they were made with, and every positive they are labelled from."""
    items = _split(spark, cfg, "gold_item_features", S.VALID).localCheckpoint()
    stamp = items.agg(F.max(S.AS_OF)).first()
    if stamp is None or stamp[0] is None:
        raise ShoprecError(
            f"{cfg.table('gold_item_features')} has no validation split: run `shoprec features`"
        )
    examples = _split(spark, cfg, "gold_training_examples", S.VALID)
    interactions = delta.read(spark, cfg.table("gold_interactions"))
    seen = splits.visible(interactions, cfg.features.split.mode, stamp[0], examples).localCheckpoint()
    had = seen.where(F.col(S.EVENT_TYPE).isin(*cfg.features.positive_events)).select(S.USER_KEY, S.ITEM_ID)
    truth = examples.select(S.USER_KEY, F.col(S.POSITIVE_ITEM).alias(S.ITEM_ID)).distinct()
    if cfg.evaluation.exclude_seen:  # the target evaluation measures: items new to the user
        truth = truth.join(had.distinct(), [S.USER_KEY, S.ITEM_ID], "left_anti")
    users = truth.select(S.USER_KEY).distinct()
    cap = cfg.training.ranker.lightgbm.max_users
    if cap is not None:
        users = users.orderBy(F.xxhash64(S.USER_KEY), S.USER_KEY).limit(cap)
    sequences = _split(spark, cfg, "gold_sequences", S.VALID).join(users, S.USER_KEY, "left_semi")
    profiles = _split(spark, cfg, "gold_user_profiles", S.VALID)
    history = int(load_meta(model_dir).get("history_items", cfg.training.history_items))
    enc = cfg.evaluation.encoder
    texts = history_texts(items, sequences, None, history)
    user_vectors = encoder.embed(texts, S.USER_KEY, "text", enc, "user", str(model_dir)).localCheckpoint()
    item_vectors = encoder.embed(
        items.select(S.ITEM_ID, S.ITEM_TEXT), S.ITEM_ID, S.ITEM_TEXT, enc, "item", str(model_dir)
    ).localCheckpoint()
    wide, sig = candidates.generate(
        spark, cfg, user_vectors, item_vectors, items, profiles, seen, str(model_dir)
    )
    wide = wide.localCheckpoint()  # read by the outside draw, the given sets and the features
    capped = truth.join(users, S.USER_KEY, "left_semi")
    outside = _outside(wide, capped, items, seen, cfg)
    feats = sig.features(wide.unionByName(outside), user_vectors, item_vectors, items, profiles)
    # every candidate serving will order, the user's own past items too (labelled 0 where the
    # target excludes them): lists without them taught the model nothing about them, and served
    # lists then led with items the user had already clicked (demo: N@10 .146 against .173)
    pdf = _labelled(feats, truth, cfg)
    given = None
    if cfg.training.ranker.lightgbm.given_negatives:
        pairs = _given(wide, capped, items, seen, cfg)
        given = _labelled(sig.features(pairs, user_vectors, item_vectors, items, profiles), truth, cfg)
    positives = capped.join(items.select(S.ITEM_ID), S.ITEM_ID, "left_semi").toPandas()
    return Lists(pdf, user_vectors, item_vectors, positives, given)


def _labelled(feats: DataFrame, truth: DataFrame, cfg: ShoprecConfig) -> pd.DataFrame:
    """``feats`` labelled by ``truth`` and marked held out or not, as pandas sorted by user."""
    labelled = feats.join(truth.withColumn(LABEL, F.lit(1.0)), [S.USER_KEY, S.ITEM_ID], "left").select(
        S.USER_KEY,
        S.ITEM_ID,
        S.SOURCE,  # "" for a pair no source proposed (:func:`_outside`)
        rk.FEATURES,
        F.coalesce(F.col(LABEL), F.lit(0.0)).alias(LABEL),
        ltr.held_out(F.col(S.USER_KEY), cfg.training.ranker.holdout).alias(ltr.HELD),
    )
    return labelled.toPandas().sort_values([S.USER_KEY, S.ITEM_ID], kind="stable").reset_index(drop=True)


def _draw(users: DataFrame, items: DataFrame, n: int, seed: int) -> DataFrame:
    """(user_key, item_id): ``n`` catalog items per user drawn by a hash of the user and ``seed``
    (the same draw on every run), by index into the catalog numbered in item order: users × n
    rows, never users × catalog. Repeats collapse, so a user may get fewer."""
    catalog = items.select(S.ITEM_ID).distinct()
    spark = items.sparkSession
    numbered = spark.createDataFrame(
        catalog.orderBy(S.ITEM_ID).rdd.zipWithIndex().map(lambda r: (r[0][0], r[1])),
        f"{S.ITEM_ID} string, _index long",
    )
    total = max(1, catalog.count())
    return (
        users.select(S.USER_KEY, F.explode(F.sequence(F.lit(1), F.lit(max(1, n)))).alias("_draw"))
        .select(
            S.USER_KEY,
            F.pmod(F.xxhash64(S.USER_KEY, F.col("_draw"), F.lit(seed)), F.lit(total)).alias("_index"),
        )
        .join(numbered, "_index")
        .select(S.USER_KEY, S.ITEM_ID)
        .distinct()
    )


def _given(
    wide: DataFrame, truth: DataFrame, items: DataFrame, seen: DataFrame, cfg: ShoprecConfig
) -> DataFrame:
    """Given-set lists: for every user of ``truth`` with candidates (held-out users too, for early
    stopping), all their positives in the catalog and ``given_negatives`` drawn items they never
    touched, each pair with the sources that proposed it (none for the others), in ``wide``'s
    columns. This is what ranking a set someone else chose looks like (sampled evaluation's target
    and 99 negatives, a shop's own shortlist): a positive there is often one no source proposed,
    which lists of candidates never show."""
    n = cfg.training.ranker.lightgbm.given_negatives
    users = (
        truth.join(wide.select(S.USER_KEY).distinct(), S.USER_KEY, "left_semi").select(S.USER_KEY).distinct()
    )
    touched = seen.select(S.USER_KEY, S.ITEM_ID).distinct()
    drawn = _draw(users, items, n, cfg.training.seed + 1).join(touched, [S.USER_KEY, S.ITEM_ID], "left_anti")
    pairs = (
        truth.join(users, S.USER_KEY, "left_semi")
        .join(items.select(S.ITEM_ID), S.ITEM_ID, "left_semi")
        .select(S.USER_KEY, S.ITEM_ID)
        .unionByName(drawn)
        .distinct()
    )
    proposed = wide.join(pairs, [S.USER_KEY, S.ITEM_ID], "left_semi")
    return proposed.unionByName(_unproposed(pairs, wide))


def _unproposed(pairs: DataFrame, wide: DataFrame) -> DataFrame:
    """The (user_key, item_id) ``pairs`` that are not in ``wide``, in its columns: source "" and
    no source's score or rank."""
    nulls = [F.lit(None).cast(wide.schema[c].dataType).alias(c) for c in wide.columns[3:]]
    rest = pairs.join(wide.select(S.USER_KEY, S.ITEM_ID), [S.USER_KEY, S.ITEM_ID], "left_anti")
    return rest.select(S.USER_KEY, S.ITEM_ID, F.lit("").alias(S.SOURCE), *nulls).select(*wide.columns)


def _outside(
    wide: DataFrame, truth: DataFrame, items: DataFrame, seen: DataFrame, cfg: ShoprecConfig
) -> DataFrame:
    """Pairs no source proposed, for the fitted (not held-out) users of ``truth`` that have
    candidates (a user without a vector has no features to learn from): up to ``outside_items``
    catalog items each that they never touched, drawn by a hash of the user (the same draw on
    every run), in ``wide``'s columns. A positive the candidates missed comes in only when drawn,
    as any other item: the pairs are then a uniform sample of what no source proposed, positive
    as often as such pairs are. Adding every missed positive made them positive far more often
    (Office: 2.6% against 0.2% for candidates), and the trees learned that an unproposed item is
    a likely positive (Office's sampled ranking, HR@10 .51 → .27)."""
    n = cfg.training.ranker.lightgbm.outside_items
    fitted = truth.where(~ltr.held_out(F.col(S.USER_KEY), cfg.training.ranker.holdout)).join(
        wide.select(S.USER_KEY).distinct(), S.USER_KEY, "left_semi"
    )
    drawn = _draw(fitted.select(S.USER_KEY).distinct(), items, n, cfg.training.seed)
    touched = seen.select(S.USER_KEY, S.ITEM_ID).distinct()
    pairs = drawn.join(touched, [S.USER_KEY, S.ITEM_ID], "left_anti")
    if n == 0:
        pairs = pairs.where(F.lit(False))
    return _unproposed(pairs, wide)


def _torch_scores(
    ranker_dir: Path, pdf: pd.DataFrame, user_vectors: DataFrame, item_vectors: DataFrame, offset: int
) -> np.ndarray[Any, Any] | None:
    """The torch head's combined score for every row of ``pdf`` (None without a trained head)."""
    if not (ranker_dir / rk.RANKER_FILE).is_file():
        return None
    saved = rk.load(ranker_dir)
    uv = user_vectors.toPandas().set_index(S.USER_KEY)["vector"]
    iv = item_vectors.toPandas().set_index(S.ITEM_ID)["vector"]
    users = np.stack([np.asarray(v, dtype=np.float32) for v in uv.reindex(pdf[S.USER_KEY])])
    items = np.stack([np.asarray(v, dtype=np.float32) for v in iv.reindex(pdf[S.ITEM_ID])])
    feats = np.stack(list(pdf[rk.FEATURES])).astype(np.float32)[:, offset : offset + len(rk.FEATURE_NAMES)]
    probs = rk.predict(saved.model.eval(), users, items, feats, 4096)
    w = saved.meta.get("weights", {"click": 1.0, "purchase": 1.0})
    eps = 1e-7
    return np.asarray(
        w.get("click", 1.0) * np.log(probs[:, 0] + eps) + w.get("purchase", 1.0) * np.log(probs[:, 1] + eps)
    )


def train_ltr(spark: SparkSession, cfg: ShoprecConfig, model_dir: Path, ranker_dir: Path) -> LtrResult | None:
    """Fit LightGBM on the validation lists, compare it with the torch head on the held-out ones,
    and save it (with the choice) beside the head in ``ranker_dir``; None (nothing saved) when no
    validation positive reaches the lists, as on a shop too small to have any."""
    started = time.perf_counter()
    r = cfg.training.ranker
    lists = validation_lists(spark, cfg, model_dir)
    pdf, user_vectors, item_vectors = lists.pdf, lists.user_vectors, lists.item_vectors
    proposed = pdf[S.SOURCE].to_numpy(dtype=object) != "" if not pdf.empty else np.zeros(0, bool)
    if pdf.empty or pdf.loc[proposed, LABEL].sum() == 0:
        log.warning(
            "learning to rank skipped: no validation positive reaches the candidate lists (%d rows); "
            "the torch head orders the candidates",
            len(pdf),
        )
        return None
    names = ltr.feature_names(candidates.SOURCES)
    x = np.stack(list(pdf[rk.FEATURES])).astype(np.float32)
    y = pdf[LABEL].to_numpy(np.float32)
    users = pdf[S.USER_KEY].to_numpy(dtype=object)
    has_positive = pdf.groupby(S.USER_KEY)[LABEL].transform("max").to_numpy() > 0
    held = pdf[ltr.HELD].to_numpy(dtype=bool)
    keep = has_positive
    g = r.lightgbm
    base = {
        "learning_rate": g.learning_rate,
        "num_leaves": g.leaves,
        "min_child_samples": g.min_child_samples,
        "feature_fraction": g.feature_fraction,
        "bagging_fraction": g.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": g.l2,
    }
    if not (held & has_positive).any() or not (~held & has_positive).any():
        log.warning("learning to rank: too few lists to hold any out; the objective is chosen out of fold")
        held[:] = False
    hold = held & has_positive
    fitted_rows = keep & ~held
    n_fitted = len(np.unique(users[fitted_rows]))
    tried: dict[str, tuple[float, ltr.Fitted, np.ndarray[Any, Any]]] = {}
    for objective in g.objectives:
        params = {**base, "objective": objective}
        fitted, oof, folded = _fit_members(x, y, users, fitted_rows, hold, proposed, names, params, cfg)
        if hold.any():
            ndcg = ltr.ndcg_at(fitted.predict(x[hold]), y[hold], users[hold], 10)
        elif folded:  # out of fold, on the candidates serving orders (each member's stopping
            # round was read on the fold it scores: a little optimistic, alike for every objective)
            own = proposed[fitted_rows]
            ndcg = ltr.ndcg_at(oof[own], y[fitted_rows][own], users[fitted_rows][own], 10)
        else:  # one list and none held out: nothing to choose on, the first objective is kept
            ndcg = 0.0
        tried[objective] = (ndcg, fitted, oof)
        log.info(
            "learning to rank: %s, %d members, NDCG@10 %.4f (%s) at %s rounds",
            objective,
            len(fitted.boosters),
            ndcg,
            "held-out users" if hold.any() else "out of fold",
            "/".join(str(m["best_iteration"]) for m in fitted.meta["members"]),
        )
    kept = max(tried, key=lambda o: tried[o][0])
    lgb_ndcg, final, oof = tried[kept]
    # never refitted on the held-out users: they stay out of every version's fit (and its
    # calibration), so promotion can compare versions on lists neither was fitted on
    # calibrated on what serving scores, candidates, each scored by a member that did not see its
    # user (the average of the members is a little narrower than one: slightly cautious odds)
    own = proposed[fitted_rows]
    calibration = ltr.calibrate(oof[own], y[fitted_rows][own])
    offset = len(names) - len(rk.FEATURE_NAMES)
    # no held-out list (a shop too small to hold any out): nothing to compare the head on
    torch_scores = (
        _torch_scores(ranker_dir, pdf[hold].reset_index(drop=True), user_vectors, item_vectors, offset)
        if hold.any()
        else None
    )
    torch_ndcg = None if torch_scores is None else ltr.ndcg_at(torch_scores, y[hold], users[hold], 10)
    if r.kind == "auto":
        chosen = "torch" if torch_ndcg is not None and torch_ndcg > lgb_ndcg else "lightgbm"
    else:
        chosen = r.kind
    given = _fit_given(lists, names, base, kept, final, ranker_dir, cfg)
    n_lists = n_fitted
    extra = {
        "given": given,
        "chosen": chosen,
        "objective": kept,
        "folds": len(final.boosters),
        "calibration": calibration,
        "held_out_ndcg_at_10": {o: t[0] for o, t in tried.items()},
        "valid_ndcg_at_10": {"lightgbm": lgb_ndcg, "torch": torch_ndcg},
        "lists": n_lists,
        "rows": int(fitted_rows.sum()),
        "holdout": r.holdout,
        # every positive of the users with a fitted-side list (held-out users and users without
        # candidates aside), reached by a source or not
        "candidate_recall": float(
            y[fitted_rows & proposed].sum()
            / max(1, int(lists.positives[S.USER_KEY].isin(set(users[~held])).sum()))
        ),
        "outside_rows": int((~proposed & fitted_rows).sum()),
    }
    ltr.save(final, ranker_dir, extra)
    seconds = time.perf_counter() - started
    log.info(
        "learning to rank: %d lists (%d rows), held-out NDCG@10 lightgbm %.4f, torch head %s: %s kept "
        "(%.0fs)",
        n_lists,
        int(fitted_rows.sum()),
        lgb_ndcg,
        "n/a" if torch_ndcg is None else f"{torch_ndcg:.4f}",
        chosen,
        seconds,
    )
    return LtrResult(
        chosen, lgb_ndcg, torch_ndcg, n_lists, int(fitted_rows.sum()), seconds, final.meta["importance_gain"]
    )


def _fit_given(
    lists: Lists,
    names: list[str],
    base: dict[str, Any],
    objective: str,
    served: ltr.Fitted,
    ranker_dir: Path,
    cfg: ShoprecConfig,
) -> dict[str, Any] | None:
    """Fit the given-set model (:func:`_given`'s lists, ``objective``) in each of
    ``given_shapes``, take the one that orders the held-out users' lists best, and keep it in
    ``ranker_dir/given`` only when it beats the served model on the same lists; a model from an
    earlier run that is not beaten now is removed. None when there were no given-set lists or
    none held out to choose on."""
    import shutil

    out = ranker_dir / ltr.GIVEN_DIR
    shutil.rmtree(out, ignore_errors=True)
    pdf = lists.given
    if pdf is None or pdf.empty:
        return None
    g = cfg.training.ranker.lightgbm
    x = np.stack(list(pdf[rk.FEATURES])).astype(np.float32)
    y = pdf[LABEL].to_numpy(np.float32)
    users = pdf[S.USER_KEY].to_numpy(dtype=object)
    keep = pdf.groupby(S.USER_KEY)[LABEL].transform("max").to_numpy() > 0
    held = pdf[ltr.HELD].to_numpy(dtype=bool)
    hold, fit_rows = keep & held, keep & ~held
    if not hold.any() or not fit_rows.any():
        log.warning("learning to rank: too few given-set lists to hold any out; no given-set model")
        return None
    tried: dict[str, tuple[float, ltr.Fitted, np.ndarray[Any, Any]]] = {}
    for leaves, rows in g.given_shapes:
        params = {**base, "objective": objective, "num_leaves": leaves, "min_child_samples": rows}
        # every row early-stops: the given sets are mostly pairs no source proposed
        fitted, oof, _ = _fit_members(x, y, users, fit_rows, hold, None, names, params, cfg)
        shape = f"{leaves}/{rows}"
        tried[shape] = (ltr.ndcg_at(fitted.predict(x[hold]), y[hold], users[hold], 10), fitted, oof)
        log.info(
            "learning to rank: given-set model, %s leaves/rows per leaf, held-out NDCG@10 %.4f",
            shape,
            tried[shape][0],
        )
    shape = max(tried, key=lambda k: tried[k][0])  # the first of equals: the order of given_shapes
    mine, fitted, oof = tried[shape]
    theirs = ltr.ndcg_at(served.predict(x[hold]), y[hold], users[hold], 10)
    kept = mine > theirs
    info = {
        "kept": kept,
        "shape": shape,
        "shapes_held_out_ndcg_at_10": {k: t[0] for k, t in tried.items()},
        "held_out_ndcg_at_10": mine,
        "served_model_held_out_ndcg_at_10": theirs,
        "lists": len(np.unique(users[fit_rows])),
        "rows": int(fit_rows.sum()),
        "negatives": g.given_negatives,
    }
    if kept:
        calibration = ltr.calibrate(oof, y[fit_rows])
        ltr.save(fitted, out, {"calibration": calibration, **info})
    log.info(
        "learning to rank: given-set lists (%d, %d rows), held-out NDCG@10 %.4f (%s) against %.4f for the "
        "served model: %s",
        info["lists"],
        info["rows"],
        mine,
        shape,
        theirs,
        "kept for given sets" if kept else "not kept",
    )
    return info
