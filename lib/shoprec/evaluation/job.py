"""``shoprec evaluate``: every configured model → recommendations (the contract) → metrics (Delta).

Per model: vectors → catalog-wide top-K (full ranking) written to the recommendations table,
ranking metrics on every slice, sampled ranking on the split's candidates, beyond-accuracy
metrics; all rows land in the metrics table under one run id (``replaceWhere`` on the run, so a
re-run of the same run id replaces, never duplicates).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from tqdm import tqdm

import shoprec
from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ScenarioConfig, ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.evaluation import data as eval_data
from shoprec.evaluation import metrics as M
from shoprec.evaluation.baselines import BASELINES, Builder, Vectors
from shoprec.evaluation.names import display_names, is_served
from shoprec.modeling import candidates as C
from shoprec.modeling import encoder, ltr
from shoprec.modeling.retrieval import score_pairs, top_k_from
from shoprec.recommendations import ensure_tables, write_recommendations
from shoprec.serving import lists as served
from shoprec.serving import rules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    run_id: str
    metrics: list[dict[str, object]]  # the run's metric rows (small: models x slices x metrics)
    seconds: dict[str, float]  # per model


def default_run_id(spark: SparkSession, cfg: ShoprecConfig, names: list[str]) -> str:
    """The same inputs give the same run id: the gold tables' versions, the evaluation settings and
    the models. Re-running on unchanged data replaces that run's rows instead of adding a run."""
    versions = [
        delta.for_location(spark, cfg.table(t)).history(1).select("version").first()
        for t in ("gold_item_features", "gold_training_examples", "gold_interactions")
    ]
    text = json.dumps(
        [
            [v[0] if v else None for v in versions],
            dataclasses.asdict(cfg.evaluation),
            names,
            shoprec.__version__,
        ],
        sort_keys=True,
        default=str,
    )
    return f"{cfg.evaluation.split}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def evaluate_vectors(
    spark: SparkSession,
    cfg: ShoprecConfig,
    data: eval_data.EvalData,
    name: str,
    vectors: Vectors,
    version: str,
    run_id: str,
    reference: DataFrame | None = None,
) -> DataFrame:
    """Recommend with ``vectors``, write the lists, and return the model's metric rows."""
    ev = cfg.evaluation
    k_max = max(ev.ks)
    targets = data.truth.select(S.USER_KEY).distinct()
    users = vectors.users.join(targets, S.USER_KEY, "left_semi")
    recs = top_k_from(
        spark,
        users,
        vectors.items,
        k_max,
        exclude=data.exclude,
        user_block=ev.user_block,
        item_block=ev.item_block,
        threads=ev.encoder.threads,
        broadcast_mib=ev.broadcast_mib,
    )
    scenario = f"eval:{data.split}"
    write_recommendations(spark, cfg, recs, name, version, run_id, scenario, vectors.source)
    scored = score_pairs(data.sampled, vectors.users, vectors.items)
    sampled = (
        M.sampled_metrics(M.positive_rank(scored), ev.ks)
        .withColumn(S.SLICE, F.lit("all"))
        .withColumn(S.RANKING, F.lit(data.sampled_label))
    )
    return list_metrics(spark, cfg, data, name, version, run_id, scenario, reference, sampled)


def list_metrics(
    spark: SparkSession,
    cfg: ShoprecConfig,
    data: eval_data.EvalData,
    name: str,
    version: str,
    run_id: str,
    scenario: str,
    reference: DataFrame | None = None,
    sampled: DataFrame | None = None,
) -> DataFrame:
    """Metric rows of the lists ``name`` wrote for ``scenario``: full ranking on every slice, beyond
    accuracy, and the ``sampled`` ranking rows when the model can score arbitrary candidates."""
    ev = cfg.evaluation
    recs = (
        delta.read(spark, cfg.table("recommendations"))
        .where((F.col(S.MODEL) == name) & (F.col(S.SCENARIO) == scenario))
        .select(S.USER_KEY, S.RANK, S.ITEM_ID, S.SCORE)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    by_slice = data.truth.select(S.USER_KEY, S.ITEM_ID, F.explode("slices").alias(S.SLICE))
    full = M.ranking_metrics(recs, by_slice, ev.ks, [S.SLICE]).withColumn(S.RANKING, F.lit("full"))

    extra: list[tuple[str, int, float | None]] = list(M.coverage(recs, data.catalog_size, ev.ks))
    item_users = data.visible.groupBy(S.ITEM_ID).agg(F.countDistinct(S.USER_KEY).alias("_users"))
    # diversity over the most specific category: a catalog with a single top category (Office) is
    # still diverse or not across its leaves
    categories = data.items.select(S.ITEM_ID, F.col(S.CATEGORY_PATH).alias(S.TOP_CATEGORY))
    for k in ev.ks:
        extra.append(("diversity_category", k, M.category_diversity(recs, categories, k)))
        if reference is not None:
            extra.append(("diversity_embedding", k, M.embedding_diversity(recs, reference, k)))
        extra.append(("novelty", k, M.novelty(recs, item_users, data.n_users, k)))
        extra.append(("exposure_gini", k, M.exposure_gini(recs, data.items, k)))
    n_users = recs.select(S.USER_KEY).distinct().count()
    beyond = spark.createDataFrame(
        [(m, k, v, n_users) for m, k, v in extra],
        f"{S.METRIC} string, {S.K} int, {S.VALUE} double, {S.USERS} long",
    ).select(F.lit("all").alias(S.SLICE), "*", F.lit("full").alias(S.RANKING))
    out = (full if sampled is None else full.unionByName(sampled)).unionByName(beyond)
    rows = out.select(
        F.lit(run_id).alias(S.RUN_ID),
        F.lit(name).alias(S.MODEL),
        F.lit(version).alias(S.MODEL_VERSION),
        F.lit(data.split).alias(S.SPLIT),
        S.RANKING,
        S.SLICE,
        S.METRIC,
        S.K,
        S.VALUE,
        S.USERS,
        F.current_timestamp().alias(S.EVALUATED_AT),
    ).localCheckpoint()
    recs.unpersist()
    return rows


def candidate_recall(data: eval_data.EvalData, scored: DataFrame, version: str, run_id: str) -> DataFrame:
    """Metric rows (model ``candidates``, metric ``recall:<source>`` or ``recall:union``, k = the
    candidates per user): the share of held-out positives each source, and all of them together,
    put in front of the ranker. No ranker can place what never reached it."""
    truth = data.truth.select(S.USER_KEY, S.ITEM_ID)
    total = truth.count()
    reached = truth.join(scored, [S.USER_KEY, S.ITEM_ID], "left")
    sizes = scored.groupBy(S.USER_KEY).agg(
        *[F.count(ltr.rank_column(s)).alias(s) for s in C.SOURCES], F.count(F.lit(1)).alias("union")
    )
    mean_size = sizes.agg(*[F.avg(c).alias(c) for c in (*C.SOURCES, "union")]).first()
    found = reached.agg(
        *[F.count(ltr.rank_column(s)).alias(s) for s in C.SOURCES], F.count(S.SOURCE).alias("union")
    ).first()
    values = []
    for name in (*C.SOURCES, "union"):
        share = float(found[name]) / total if found is not None and total else None
        size = round(float(mean_size[name] or 0)) if mean_size is not None else 0
        values.append((f"recall:{name}", size, share))
        log.info("candidates: %s reaches %s of the held-out positives (%d per user)", name,
                 "-" if share is None else f"{share:.3f}", size)  # fmt: skip
    spark = scored.sparkSession
    return spark.createDataFrame(
        [
            (run_id, S.CANDIDATES_MODEL, version, data.split, "full", "all", m, k, v, total)
            for m, k, v in values
        ],
        f"{S.RUN_ID} string, {S.MODEL} string, {S.MODEL_VERSION} string, {S.SPLIT} string, "
        f"{S.RANKING} string, {S.SLICE} string, {S.METRIC} string, {S.K} int, {S.VALUE} double, "
        f"{S.USERS} long",
    ).withColumn(S.EVALUATED_AT, F.current_timestamp())


def scored_scenario(cfg: ShoprecConfig) -> ScenarioConfig:
    """The scenario whose lists evaluation and promotion measure (``evaluation.scored_scenario``)."""
    scenarios = {s.name: s for s in cfg.scoring.scenarios}
    name = cfg.evaluation.scored_scenario or cfg.scoring.scenarios[0].name
    if name not in scenarios:
        raise ShoprecError(
            f"evaluation.scored_scenario: no scenario {name!r} in scoring.scenarios "
            f"(have: {', '.join(scenarios)})"
        )
    return scenarios[name]


@dataclass(frozen=True)
class ScoredView:
    """What the served lists of a split are made from: its view, the candidates, and the ranker's
    scores (the rules' input)."""

    view: served.AsOf
    pool: served.Pool
    staged: DataFrame


def scored_view(
    spark: SparkSession, cfg: ShoprecConfig, data: eval_data.EvalData, model_dir: Path
) -> ScoredView:
    """The candidates and the ranker's scores (the rules' input) that ``model_dir`` gives the
    split's users, from the split's past: what ``shoprec score`` computes from the serving state."""
    targets = data.truth.select(S.USER_KEY).distinct()
    # the split's own catalog, embedded by the model's item tower: the serving embeddings hold
    # items the split never had (retrieved, then lost in a join) and lack ones it did
    item_vectors = encoder.embed(
        data.items.select(S.ITEM_ID, S.ITEM_TEXT),
        S.ITEM_ID,
        S.ITEM_TEXT,
        cfg.evaluation.encoder,
        "item",
        str(model_dir),
    )
    view = served.AsOf(data.items, data.profiles, data.sequences, data.visible, item_vectors, targets)
    pool = served.user_candidates(spark, cfg, model_dir, view)
    # computed once, kept by this run alone: not in scoring's staging table, which `score` clears
    return ScoredView(view, pool, served.score_view(spark, cfg, model_dir, view, pool).localCheckpoint())


def sampled_pool(pool: served.Pool, sampled: DataFrame) -> served.Pool:
    """The split's sampled candidates as a pool: each pair with the sources that proposed it and
    their scores and ranks (none for a pair no source proposed), so the ranker scores the given
    candidates with exactly the features it serves with."""
    pairs = sampled.select(S.USER_KEY, S.ITEM_ID).distinct()
    scored = (
        pairs.join(pool.scored, [S.USER_KEY, S.ITEM_ID], "left")
        .withColumn(S.SOURCE, F.coalesce(F.col(S.SOURCE), F.lit("")))
        .select(*pool.scored.columns)
        .localCheckpoint()
    )
    return dataclasses.replace(pool, scored=scored, cands=scored.select(S.USER_KEY, S.ITEM_ID, S.SOURCE))


def served_sampled(data: eval_data.EvalData, lists: DataFrame, ks: tuple[int, ...]) -> DataFrame:
    """Sampled-ranking rows of served lists made from the split's sampled candidates: a candidate's
    score is its place in the list; one the rules dropped ranks below the list, a dropped positive
    below every candidate (it was not served)."""
    ranked = data.sampled.join(lists.select(S.USER_KEY, S.ITEM_ID, S.RANK), [S.USER_KEY, S.ITEM_ID], "left")
    score = (
        F.when(F.col(S.RANK).isNotNull(), -F.col(S.RANK).cast("double"))
        .when(F.col("is_positive"), F.lit(-2e9))
        .otherwise(F.lit(-1e9))
    )
    scored = ranked.select("event", "is_positive", score.alias(S.SCORE))
    return (
        M.sampled_metrics(M.positive_rank(scored), ks)
        .withColumn(S.SLICE, F.lit("all"))
        .withColumn(S.RANKING, F.lit(data.sampled_label))
    )


def evaluate_scored(
    spark: SparkSession,
    cfg: ShoprecConfig,
    data: eval_data.EvalData,
    model_dir: Path,
    version: str,
    run_id: str,
    reference: DataFrame | None = None,
) -> list[DataFrame]:
    """The scoring job's lists as of the split, before any business rule and after each one.

    The candidates, the ranker and the rules are exactly what ``shoprec score`` runs, fed with the
    split's past (its gold snapshot, the interactions it may see) instead of the serving state, so
    the held-out positives measure them. One model row per step shows what each rule costs. The
    same ranker and rules also order each event's sampled candidates (sampled ranking). When the
    learning-to-rank model serves, the torch head's lists with every rule are measured beside it
    (``evaluation.torch_head``).
    """
    sc = scored_scenario(cfg)
    ev = cfg.evaluation
    sv = scored_view(spark, cfg, data, model_dir)
    rows = [candidate_recall(data, sv.pool.scored, version, run_id)]
    split_scenario = f"eval:{data.split}"
    given = sampled_pool(sv.pool, data.sampled)
    # every sampled candidate of a user stays in the list, so a rank exists for each
    longest = given.cands.groupBy(S.USER_KEY).count().agg(F.max("count")).first()
    n_sampled = int(longest[0]) if longest and longest[0] is not None else 0
    heads = ["chosen"]
    if ev.torch_head and (ltr.model_meta(model_dir) or {}).get("chosen") == "lightgbm":
        heads.append("torch")
    staged = {"chosen": sv.staged}
    given_staged: dict[str, DataFrame] = {}
    for head in heads:
        if head not in staged:
            staged[head] = served.score_view(
                spark, cfg, model_dir, sv.view, sv.pool, head=head
            ).localCheckpoint()
        if n_sampled:
            given_staged[head] = served.score_view(
                spark, cfg, model_dir, sv.view, given, head=head, given=True
            ).localCheckpoint()
    steps = rules.ablation(sc, max(ev.ks))
    name = cfg.scoring.model_name
    runs = [(f"{name} {i} {label}", variant, "chosen") for i, (label, variant) in enumerate(steps)]
    if "torch" in heads:  # the torch head with every rule of the scenario (the last step's variant)
        runs.append((f"{name} torch head {steps[-1][0]}", steps[-1][1], "torch"))
    for model, variant, head in tqdm(runs, desc="rules", unit="step", disable=None):
        lists = served.rerank(staged[head], variant, sv.pool.item_vectors)
        write_recommendations(spark, cfg, lists, model, version, run_id, split_scenario, "")
        sampled = None
        if head in given_staged:
            whole = dataclasses.replace(variant, k=n_sampled)
            ordered = served.rerank(given_staged[head], whole, sv.pool.item_vectors)
            sampled = served_sampled(data, ordered, ev.ks)
        rows.append(
            list_metrics(spark, cfg, data, model, version, run_id, split_scenario, reference, sampled)
        )
    return rows


def evaluate(
    spark: SparkSession,
    cfg: ShoprecConfig,
    models: list[str] | None = None,
    run_id: str | None = None,
    extra: dict[str, Builder] | None = None,
    scored: tuple[Path, str] | None = None,
) -> EvalResult:
    """Evaluate the configured baselines (and ``extra`` models, e.g. a fine-tuned retriever; and
    with ``scored`` = (model directory, version), the scoring job's lists) on the configured split
    and record everything."""
    builders: dict[str, Builder] = {**BASELINES, **(extra or {})}
    chosen = list(cfg.evaluation.models) if models is None else list(models)
    names = chosen + [n for n in (extra or {}) if n not in chosen]
    unknown = sorted(set(names) - set(builders))
    if unknown:
        raise ShoprecError(f"evaluation.models: unknown {', '.join(unknown)} (known: {', '.join(builders)})")
    ensure_tables(spark, cfg)
    run_id = run_id or default_run_id(spark, cfg, names)
    data = eval_data.load(spark, cfg)
    version = shoprec.__version__
    reference: DataFrame | None = None
    # the zero-shot encoder's item vectors are the reference for embedding diversity: run it first
    names = sorted(names, key=lambda n: n != "encoder")
    all_rows: list[DataFrame] = []
    seconds: dict[str, float] = {}
    for name in tqdm(names, desc="evaluate", unit="model", disable=None):
        started = time.perf_counter()
        vectors = builders[name](spark, cfg, data)
        vectors = Vectors(
            vectors.users.localCheckpoint(), vectors.items.localCheckpoint(), vectors.source
        )  # computed once: retrieval, sampled scoring and diversity all read them
        if name == "encoder":
            reference = vectors.items
        all_rows.append(evaluate_vectors(spark, cfg, data, name, vectors, version, run_id, reference))
        seconds[name] = time.perf_counter() - started
        log.info("evaluated %s in %.1fs", name, seconds[name])
    if scored is not None:
        started = time.perf_counter()
        all_rows += evaluate_scored(spark, cfg, data, scored[0], scored[1], run_id, reference)
        seconds["scored"] = time.perf_counter() - started
        log.info("evaluated the scoring job's lists in %.1fs", seconds["scored"])
    if not all_rows:
        raise ShoprecError("nothing to evaluate: evaluation.models is empty and no trained model was given")
    result_df = all_rows[0]
    for df in all_rows[1:]:
        result_df = result_df.unionByName(df)
    delta.replace_where(result_df.coalesce(1), cfg.table("eval_metrics"), f"{S.RUN_ID} = '{run_id}'")
    collected = [
        r.asDict()
        for r in delta.read(spark, cfg.table("eval_metrics")).where(F.col(S.RUN_ID) == run_id).collect()
    ]
    data.unpersist()
    return EvalResult(run_id, collected, seconds)


def headline(rows: list[dict[str, object]], ks: tuple[int, ...], lead: str = "shoprec") -> str:
    """A plain-text table: one line per model, the main full-ranking and sampled metrics; the lists
    shoprec serves (models named ``lead ...``) first, in rule order, then the rest best first, each
    by its plain name (:mod:`shoprec.evaluation.names`)."""
    value = {(r[S.MODEL], r[S.RANKING], r[S.METRIC], r[S.K]): r[S.VALUE] for r in rows if r[S.SLICE] == "all"}

    def order(model: str) -> tuple[int, float, str]:
        if model == lead or is_served(model, lead):
            return (0, 0.0, model)
        v = value.get((model, "full", "ndcg", ks[0]))
        return (1, -float(v) if isinstance(v, float) else 0.0, model)

    models = sorted({str(r[S.MODEL]) for r in rows if r[S.MODEL] != S.CANDIDATES_MODEL}, key=order)
    plain = display_names(models, lead)
    cols = [("full", "recall", k) for k in ks] + [("full", "ndcg", k) for k in ks] + [("full", "mrr", 0)]
    sampled_label = next((str(r[S.RANKING]) for r in rows if str(r[S.RANKING]).startswith("sampled")), None)
    if sampled_label:  # at the first cut-off, as the full-ranking columns start
        cols += [(sampled_label, "hit_rate", ks[0]), (sampled_label, "ndcg", ks[0])]
    cols += [("full", "coverage", max(ks))]
    short = {"recall": "R", "ndcg": "N", "mrr": "MRR", "hit_rate": "HR", "coverage": "cov"}
    names = [
        (short[m] + "@" + str(k) if k else short[m]) + ("(s)" if rk != "full" else "") for rk, m, k in cols
    ]
    widths = [max(8, len(n) + 2) for n in names]
    width = max([20, *(len(plain[m]) + 2 for m in models)])
    head = f"{'model':<{width}}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))
    lines = [head]
    for model in models:
        cells = []
        for (rk, m, k), w in zip(cols, widths, strict=True):
            v = value.get((model, rk, m, k))
            cells.append(f"{v:>{w}.4f}" if isinstance(v, float) else f"{'-':>{w}}")
        lines.append(f"{plain[model]:<{width}}" + "".join(cells))
    legend = "R recall, N NDCG, MRR over the full catalog; cov catalog coverage"
    if sampled_label:
        legend += f"; (s) {sampled_label} ranking, HR hit rate"
    lines.append(legend)
    return "\n".join(lines)


def log_to_run(cfg: ShoprecConfig, uri: str, run_id: str, rows: list[dict[str, object]]) -> None:
    """The retriever's headline metrics from an evaluation run, into the MLflow run that trained it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for r in rows:
        if r[S.MODEL] != "retriever" or r[S.SLICE] != "all" or r[S.VALUE] is None:
            continue
        if r[S.METRIC] in ("recall", "ndcg", "hit_rate", "mrr"):
            ranking = "full" if r[S.RANKING] == "full" else "sampled"
            key = f"{cfg.evaluation.split}_{ranking}_{r[S.METRIC]}_at_{r[S.K]}"
            client.log_metric(run_id, key, float(str(r[S.VALUE])))


def evaluate_trained(
    spark: SparkSession, cfg: ShoprecConfig, model_dir: Path, tracking_uri: str, mlflow_run_id: str
) -> EvalResult:
    """The fine-tuned retriever at ``model_dir`` on the configured split, its metrics logged to the
    MLflow run that trained it (what ``shoprec train`` does unless ``--no-evaluate``)."""
    from shoprec.evaluation.baselines import two_tower

    retriever = two_tower(str(model_dir), cfg.training.history_items)
    result = evaluate(spark, cfg, models=[], extra={"retriever": retriever})
    log_to_run(cfg, tracking_uri, mlflow_run_id, result.metrics)
    return result
