"""Promotion on what is served: a version becomes ``@champion`` only if the lists it would serve beat
the champion's, measured now on the same data.

The measure (``training.promote_metric``, default ``valid_served_ndcg_at_10``) runs the whole
serving path for a model directory (its candidates, its ranker, the scored scenario's rules) on
the validation split and scores the lists by full ranking over the catalog. Only the validation
users that no ranking model is fitted on (:func:`shoprec.modeling.ltr.held_out`, the same users in
every run) count: the learning-to-rank model is fitted on the other users' validation lists, so
on theirs a new version would be judged on its own training labels. The test split is never read.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec import registry
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.evaluation import data as eval_data
from shoprec.evaluation import metrics as M
from shoprec.evaluation.job import scored_scenario, scored_view
from shoprec.modeling import ltr
from shoprec.serving import lists as served

log = logging.getLogger(__name__)
_METRIC = re.compile(r"valid_served_(?P<metric>ndcg|recall|mrr)_at_(?P<k>\d+)")


def served_measure(spark: SparkSession, cfg: ShoprecConfig) -> Callable[[Path], float]:
    """A model directory → ``training.promote_metric`` of the lists it would serve (see the module).
    The validation data is loaded once and shared by every model measured."""
    m = _METRIC.fullmatch(cfg.training.promote_metric)
    if m is None:
        raise ShoprecError(
            f"training.promote_metric {cfg.training.promote_metric!r}: expected "
            "valid_served_<ndcg|recall|mrr>_at_<k>"
        )
    metric, k = m.group("metric"), int(m.group("k"))
    vcfg = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, split="valid", ks=(k,)))
    data = eval_data.load(spark, vcfg)
    held = ltr.held_out(F.col(S.USER_KEY), cfg.training.ranker.holdout)
    data = dataclasses.replace(data, truth=data.truth.where(held).localCheckpoint())
    users = data.truth.select(S.USER_KEY).distinct().count()
    if users == 0:
        raise ShoprecError(
            "promotion: no validation user is held out of the ranker's fit "
            f"(training.ranker.holdout = {cfg.training.ranker.holdout}): nothing to compare versions on"
        )
    truth = data.truth.select(S.USER_KEY, S.ITEM_ID, F.lit("all").alias(S.SLICE))
    scenario = dataclasses.replace(scored_scenario(vcfg), k=max(k, 1))

    def measure(model_dir: Path) -> float:
        sv = scored_view(spark, vcfg, data, model_dir)
        lists = served.rerank(sv.staged, scenario, sv.pool.item_vectors).select(
            S.USER_KEY, S.RANK, S.ITEM_ID, S.SCORE
        )
        rows = M.ranking_metrics(lists, truth, [k], [S.SLICE]).where(F.col(S.METRIC) == metric).collect()
        value = float(rows[0][S.VALUE]) if rows else 0.0
        log.info("promotion: %s serves %s = %.4f to %d held-out validation users",
                 model_dir.name, cfg.training.promote_metric, value, users)  # fmt: skip
        sv.staged.unpersist()
        return value

    return measure


def promote_served(
    spark: SparkSession, cfg: ShoprecConfig, version: str | None = None, force: bool = False
) -> registry.Promotion:
    """:func:`shoprec.registry.promote` with both versions' served lists measured now."""
    return registry.promote(cfg, version, force, measure=None if force else _lazy(spark, cfg))


def _lazy(spark: SparkSession, cfg: ShoprecConfig) -> Callable[[Path], float]:
    """The measure, its data loaded on first use: a candidate that already is champion costs nothing."""
    built: list[Callable[[Path], float]] = []

    def measure(model_dir: Path) -> float:
        if not built:
            built.append(served_measure(spark, cfg))
        return built[0](model_dir)

    return measure
