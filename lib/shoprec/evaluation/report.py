"""``shoprec report``: one self-contained HTML page comparing models side by side.

Plots are PNGs (matplotlib, headless) embedded as data URIs, so the page can be mailed or attached
to a job run as one file. Figures read the metrics table (small: one run's rows) and a bounded
sample of the recommendations table; nothing user-sized reaches the driver.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec import delta
from shoprec import schemas as S
from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError
from shoprec.evaluation.names import display_names, is_served, served_model

log = logging.getLogger(__name__)
STYLE = (
    "body{font-family:sans-serif;max-width:1300px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "td.best{font-weight:bold;background:#e8f4e8}img{max-width:100%}.note{color:#555}"
    ".verdict{font-size:20px;line-height:1.4;margin:0.5em 0}"
)
SCORE_SAMPLE = 20_000  # recommendation scores per model drawn for the histograms


@dataclass
class LossCurve:
    """A training run's loss by step (filled in by training; empty until a model is trained)."""

    name: str
    steps: list[int]
    losses: list[float]
    valid: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _value(
    rows: Sequence[dict[str, Any]], model: str, ranking: str, slice_: str, metric: str, k: int
) -> float | None:
    for r in rows:
        if (r[S.MODEL], r[S.RANKING], r[S.SLICE], r[S.METRIC], r[S.K]) == (model, ranking, slice_, metric, k):
            v = r[S.VALUE]
            return float(v) if v is not None else None
    return None


def _order(rows: Sequence[dict[str, Any]], models: list[str], metric: str, k: int) -> list[str]:
    """Models best first by ``metric@k`` over all users: every chart reads top to bottom."""
    return sorted(models, key=lambda m: -(_value(rows, m, "full", "all", metric, k) or 0.0))


def _wrap(name: str, width: int = 32) -> str:
    """A long model name over two or three lines, so the chart keeps its width for the bars."""
    import textwrap

    return "\n".join(textwrap.wrap(name, width)) or name


def _colour(model: str, served: str | None) -> str:
    return "tab:green" if model == served else "tab:gray"


def _verdict(
    rows: Sequence[dict[str, Any]], models: list[str], names: dict[str, str], lead: str, k: int
) -> tuple[str, str | None]:
    """The first screen: which lists to serve and by how much they win, in one sentence and one
    chart (the served lists against every baseline at ``k``)."""
    import matplotlib.pyplot as plt

    served = served_model(models, lead)
    baselines = [m for m in models if not is_served(m, lead)]

    def v(model: str, metric: str) -> float:
        return _value(rows, model, "full", "all", metric, k) or 0.0

    def gain(a: float, b: float) -> str:
        return f"{(a / b - 1) * 100:+.0f}%" if b > 0 else "n/a"

    best = max(baselines, key=lambda m: v(m, "ndcg"), default=None)
    if served is None and best is None:
        return "<p>No model in this run.</p>", None
    if served is None:
        assert best is not None
        sentence = (
            f"No trained model in this run: the best baseline is <b>{html.escape(names[best])}</b> "
            f"(NDCG@{k} {v(best, 'ndcg'):.4f}, Recall@{k} {v(best, 'recall'):.4f})."
        )
    elif best is None:
        sentence = (
            f"Serve <b>{html.escape(names[served])}</b>: NDCG@{k} {v(served, 'ndcg'):.4f}, "
            f"Recall@{k} {v(served, 'recall'):.4f} (no baseline in this run)."
        )
    else:
        sn, bn = v(served, "ndcg"), v(best, "ndcg")
        sr, br = v(served, "recall"), v(best, "recall")
        wins = sn > bn and sr > br
        head = (
            f"Serve <b>{html.escape(names[served])}</b>" if wins else
            f"<b>{html.escape(names[best])}</b>, a baseline, beats the served lists on at least one measure"
        )  # fmt: skip
        sentence = (
            f"{head}: NDCG@{k} {sn:.4f} against {bn:.4f} for {html.escape(names[best])}, the best baseline "
            f"({gain(sn, bn)}); Recall@{k} {sr:.4f} against {br:.4f} ({gain(sr, br)})."
        )
    shown = _order(rows, ([served] if served else []) + baselines, "ndcg", k)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(shown) + 1.4), sharey=True)
    y = list(range(len(shown)))
    for ax, metric, title in zip(axes, ("ndcg", "recall"), (f"NDCG@{k}", f"Recall@{k}"), strict=True):
        ys = [v(m, metric) for m in shown]
        bars = ax.barh(y, ys, color=[_colour(m, served) for m in shown])
        ax.bar_label(bars, fmt="%.4f", fontsize=8, padding=2)
        ax.set_xlim(0, (max(ys, default=0.0) or 1.0) * 1.22)  # room for the labels
        ax.set_title(f"{title}, full ranking (green: what shoprec serves)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [_wrap(names[m]) for m in shown], fontsize=9)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return f"<p class=verdict>{sentence}</p>", _png(fig)


def _dots(rows: Sequence[dict[str, Any]], models: list[str], names: dict[str, str], ks: list[int]) -> str:
    """Every model at every cut-off: one panel per metric, models sorted best first, one marker
    per K (a dot plot stays readable with any number of models)."""
    import matplotlib.pyplot as plt

    metrics = (("recall", "Recall@K"), ("ndcg", "NDCG@K"), ("hit_rate", "HitRate@K"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 0.42 * len(models) + 1.6))
    markers = "os^Dv"
    for ax, (metric, title) in zip(axes, metrics, strict=True):
        order = _order(rows, models, metric, ks[0])
        y = list(range(len(order)))
        for j, k in enumerate(ks):
            xs = [_value(rows, m, "full", "all", metric, k) for m in order]
            ax.scatter(
                [x if x is not None else float("nan") for x in xs],
                y,
                marker=markers[j % 5],
                s=28,
                label=f"K={k}",
            )
        ax.set_yticks(y, [_wrap(names[m], 28) for m in order], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{title}, full ranking", fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _panels(
    rows: Sequence[dict[str, Any]],
    models: list[str],
    names: dict[str, str],
    groups: list[tuple[str, str]],
    metric: str,
    k: int,
) -> str:
    """Small multiples: one panel of horizontal bars per slice, models in one order throughout
    (best first over all users), each value at its bar's end."""
    import matplotlib.pyplot as plt

    cols = min(4, len(groups))
    nrows = -(-len(groups) // cols)
    order = _order(rows, models, metric, k)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(4.2 * cols, (0.32 * len(models) + 1.2) * nrows), squeeze=False
    )
    for ax, (slice_, label) in zip(axes.flat, groups, strict=False):
        ys = [_value(rows, m, "full", slice_, metric, k) or 0.0 for m in order]
        bars = ax.barh(range(len(order)), ys, color="tab:blue")
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ax.set_xlim(0, (max(ys, default=0.0) or 1.0) * 1.3)
        ax.set_yticks(
            range(len(order)), [_wrap(names[m], 28) for m in order] if ax in axes[:, 0] else [], fontsize=8
        )
        ax.invert_yaxis()
        ax.set_title(f"{label}: {metric}@{k}", fontsize=9)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)


def _beyond(rows: Sequence[dict[str, Any]], models: list[str], names: dict[str, str], k: int) -> str:
    import matplotlib.pyplot as plt

    panels = (
        ("coverage", "Catalog coverage (share of items ever shown)"),
        ("diversity_category", "Intra-list diversity (different leaf categories)"),
        ("novelty", "Novelty (bits: higher = less popular items)"),
        ("exposure_gini", "Exposure Gini (0 even, 1 concentrated)"),
    )
    order = _order(rows, models, "ndcg", k)
    fig, axes = plt.subplots(1, 4, figsize=(17, 0.32 * len(models) + 1.4))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        ys = [_value(rows, m, "full", "all", metric, k) or 0.0 for m in order]
        bars = ax.barh(range(len(order)), ys, color="tab:gray")
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ax.set_xlim(0, (max(ys, default=0.0) or 1.0) * 1.3)
        ax.set_yticks(
            range(len(order)), [_wrap(names[m], 28) for m in order] if ax is axes[0] else [], fontsize=8
        )
        ax.set_title(f"{title}\n@{k}", fontsize=9)
        ax.invert_yaxis()
    fig.tight_layout()
    return _png(fig)


def _scores(
    spark: SparkSession, cfg: ShoprecConfig, models: list[str], names: dict[str, str], scenario: str
) -> str | None:
    """Each model's score histogram, small multiples four to a row."""
    import matplotlib.pyplot as plt

    recs = delta.read(spark, cfg.table("recommendations")).where(F.col(S.SCENARIO) == scenario)
    cols = min(4, len(models))
    nrows = -(-len(models) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 2.8 * nrows), squeeze=False)
    drawn = False
    for ax, model in zip(axes.flat, models, strict=False):
        sample = recs.where(F.col(S.MODEL) == model).select(S.RANK, S.SCORE).limit(SCORE_SAMPLE).toPandas()
        if sample.empty:
            ax.set_visible(False)
            continue
        drawn = True
        top = sample[sample[S.RANK] == 1][S.SCORE]
        ax.hist(sample[S.SCORE], bins=40, alpha=0.6, label="all ranks")
        ax.hist(top, bins=40, alpha=0.8, label="rank 1")
        ax.set_title(names[model], fontsize=8)
        ax.set_xlabel("score (model's own scale)", fontsize=8)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(models) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig) if drawn else None


def _losses(curves: Sequence[LossCurve]) -> str | None:
    import matplotlib.pyplot as plt

    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for c in curves:
        ax.plot(c.steps, c.losses, label=f"{c.name} (train)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Fine-tuning loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _table(rows: Sequence[dict[str, Any]], models: list[str], names: dict[str, str], ks: list[int]) -> str:
    sampled = sorted({str(r[S.RANKING]) for r in rows if str(r[S.RANKING]).startswith("sampled")})
    cols: list[tuple[str, str, int]] = [
        ("full", m, k) for m in ("recall", "ndcg", "hit_rate", "precision", "map") for k in ks
    ]
    cols += [("full", "mrr", 0)]
    cols += [(rk, m, k) for rk in sampled for m in ("hit_rate", "ndcg") for k in ks]
    cols += [("full", "coverage", max(ks))]
    head = "".join(
        f"<th>{html.escape(m)}{'@' + str(k) if k else ''}<br><small>{html.escape(rk)}</small></th>"
        for rk, m, k in cols
    )
    body = []
    for model in models:
        vals = [_value(rows, model, rk, "all", m, k) for rk, m, k in cols]
        best = []
        for j, (rk, m, k) in enumerate(cols):
            column = [_value(rows, mm, rk, "all", m, k) or 0.0 for mm in models]
            best.append(vals[j] is not None and vals[j] == max(column) and m != "coverage")
        cells = "".join(
            f"<td class={'best' if b else ''}>{v:.4f}</td>" if v is not None else "<td>-</td>"
            for v, b in zip(vals, best, strict=True)
        )
        body.append(f"<tr><th title='{html.escape(model)}'>{html.escape(names[model])}</th>{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(body)}</table>"


def _reach(rows: list[dict[str, Any]]) -> str:
    """The candidate sources' recall: the share of held-out positives each one, and all together,
    hand to the ranker (the ceiling of any ranking of them)."""
    if not rows:
        return ""
    cells = "".join(
        f"<tr><td>{html.escape(str(r[S.METRIC]).removeprefix('recall:'))}</td><td>{int(r[S.K]):,}</td>"
        f"<td>{'-' if r[S.VALUE] is None else f'{float(r[S.VALUE]):.4f}'}</td></tr>"
        for r in sorted(rows, key=lambda r: (str(r[S.METRIC]) == "recall:union", -(r[S.VALUE] or 0.0)))
    )
    return (
        "<h2>Candidate recall</h2><p class=note>The share of held-out positives each candidate source "
        "reaches (candidates per user beside it); no ranking can place what never reached it.</p>"
        f"<table><tr><th>source</th><th>per user</th><th>recall</th></tr>{cells}</table>"
    )


def _ranker(meta: Mapping[str, Any] | None, top: int = 15) -> str:
    """What the learning-to-rank model reads: the choice, both rankers' held-out NDCG@10, and the
    features with the largest share of the total gain, averaged over the ensemble's members (why the
    lists are ordered so)."""
    if not meta:
        return ""
    gains = {str(k): float(v) for k, v in (meta.get("importance_gain") or {}).items()}
    total = sum(gains.values()) or 1.0
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{g / total:.3f}</td></tr>"
        for n, g in sorted(gains.items(), key=lambda t: -t[1])[:top]
    )
    valid = meta.get("valid_ndcg_at_10") or {}
    figures = ", ".join(f"{html.escape(str(k))} {float(v):.4f}" for k, v in valid.items() if v is not None)
    chosen, objective = html.escape(str(meta.get("chosen", "?"))), html.escape(str(meta.get("objective", "")))
    given = meta.get("given") or {}
    shapes = given.get("shapes_held_out_ndcg_at_10") or {}
    shape_note = (
        f" with trees of {html.escape(str(given.get('shape')))} leaves/rows per leaf, the best of "
        + ", ".join(f"{html.escape(str(k))} {float(v):.4f}" for k, v in shapes.items())
        if len(shapes) > 1
        else ""
    )
    given_note = (
        f" Sampled ranking orders its given sets with the <b>given-set model</b>, fitted on "
        f"{int(given.get('lists', 0)):,} lists of each user's positives and {int(given.get('negatives', 0))} "
        f"drawn items (held-out NDCG@10 on such lists {float(given['held_out_ndcg_at_10']):.4f}"
        f"{shape_note}, against "
        f"{float(given['served_model_held_out_ndcg_at_10']):.4f} for the model that serves); full ranking "
        "measures the served lists, ordered by the model above."
        if given.get("kept")
        else ""
    )
    return (
        f"<h2>The ranker</h2><p class=note>Ordered by <b>{chosen}</b> ({objective}), "
        f"fitted on {int(meta.get('lists', 0)):,} candidate lists of the validation cut; held-out "
        f"NDCG@10: {figures or '-'}.{given_note} Share of the gain (over {int(meta.get('folds', 1))} fold "
        f"members), top {top} of {len(gains)} "
        f"features:</p><table><tr><th>feature</th><th>gain share</th></tr>{rows}</table>"
    )


def _reasons(spark: SparkSession, cfg: ShoprecConfig, users: int = 3, rows: int = 5) -> str:
    """A few served lists with their reasons, and how often each kind of reason is given: what a
    shop would show beside its recommendations (``shoprec score``'s lists, the first scenario)."""
    location = cfg.table("recommendations")
    if not delta.exists(spark, location) or S.REASON not in delta.read(spark, location).columns:
        return ""
    scenario = cfg.scoring.scenarios[0].name if cfg.scoring.scenarios else None
    recs = delta.read(spark, location).where(
        (F.col(S.MODEL) == cfg.scoring.model_name)
        & (F.col(S.SCENARIO) == scenario)
        & F.col(S.REASON).isNotNull()
    )
    kinds = recs.groupBy(F.col(S.REASON)[S.REASON_KIND].alias("kind")).count().collect()
    if not kinds:
        return ""
    total = sum(int(r["count"]) for r in kinds)
    shares = ", ".join(
        f"{html.escape(str(r['kind']))} {int(r['count']) / total:.0%}"
        for r in sorted(kinds, key=lambda r: -r["count"])
    )
    # the users whose top rows give the most different reasons: a sample that shows the kinds
    top = recs.where(F.col(S.RANK) <= rows)
    chosen = (
        top.groupBy(S.USER_KEY)
        .agg(F.countDistinct(F.col(S.REASON)[S.REASON_KIND]).alias("_k"))
        .orderBy(F.desc("_k"), S.USER_KEY)
        .limit(users)
    )
    titles = (
        delta.read(spark, cfg.table("gold_item_features"))
        .where(F.col(S.SPLIT) == S.SERVING)
        .select(S.ITEM_ID, S.TITLE)
    )
    listed = (
        top.join(chosen, S.USER_KEY, "left_semi")
        .join(titles, S.ITEM_ID, "left")
        .select(S.USER_KEY, S.RANK, S.ITEM_ID, S.TITLE, F.col(S.REASON)[S.REASON_TEXT].alias("_why"))
        .orderBy(S.USER_KEY, S.RANK)
        .collect()
    )
    body = "".join(
        f"<tr><td>{html.escape(str(r[S.USER_KEY])[:12])}</td><td>{r[S.RANK]}</td>"
        f"<td>{html.escape(str(r[S.TITLE] or r[S.ITEM_ID]))}</td><td>{html.escape(str(r['_why']))}</td></tr>"
        for r in listed
    )
    return (
        f"<h2>Why these items</h2><p class=note>Each served row carries its reason: what the ranker "
        f"credits most for the item (its SHAP contributions), with the history item it refers to. "
        f"Reasons over all {total:,} rows of scenario {html.escape(str(scenario))}: {shares}.</p>"
        f"<table><tr><th>user</th><th>rank</th><th>item</th><th>reason</th></tr>{body}</table>"
    )


def write_report(
    spark: SparkSession,
    cfg: ShoprecConfig,
    run_id: str | None = None,
    out: str | Path | None = None,
    curves: Sequence[LossCurve] = (),
    ranker: Mapping[str, Any] | None = None,
) -> Path:
    """Write the HTML report of one evaluation run (default: the latest) and return its path;
    ``ranker`` is the scored model's learning-to-rank metadata (``ltr.json``), when it has one."""
    metrics = delta.read(spark, cfg.table("eval_metrics"))
    if run_id is None:
        latest = metrics.agg(F.max(F.struct(S.EVALUATED_AT, S.RUN_ID))).first()
        if latest is None or latest[0] is None:
            raise ShoprecError(f"{cfg.table('eval_metrics')} is empty: run `shoprec evaluate` first")
        run_id = latest[0][S.RUN_ID]
    rows = [r.asDict() for r in metrics.where(F.col(S.RUN_ID) == run_id).collect()]
    if not rows:
        raise ShoprecError(f"{cfg.table('eval_metrics')}: no rows for run {run_id}")
    reach = [r for r in rows if r[S.MODEL] == S.CANDIDATES_MODEL]
    rows = [r for r in rows if r[S.MODEL] != S.CANDIDATES_MODEL]
    ks = sorted({int(r[S.K]) for r in rows if r[S.METRIC] == "recall"})
    if not ks:
        raise ShoprecError(f"{cfg.table('eval_metrics')}: run {run_id} has no full-ranking recall rows")
    split = rows[0][S.SPLIT]
    k_main = 10 if 10 in ks else ks[0]
    lead = cfg.scoring.model_name
    names = display_names({str(r[S.MODEL]) for r in rows}, lead)
    # the table: the served lists first, in rule order, then the baselines best first
    served = sorted(m for m in names if is_served(m, lead))
    models = served + _order(rows, [m for m in names if not is_served(m, lead)], "ndcg", k_main)
    cats = sorted({r[S.SLICE] for r in rows if str(r[S.SLICE]).startswith("category=")})
    users = {r[S.MODEL]: r[S.USERS] for r in rows if r[S.SLICE] == "all" and r[S.METRIC] == "recall"}
    sentence, verdict_png = _verdict(rows, models, names, lead, k_main)
    sections: list[tuple[str, str | None, str]] = [
        (
            "Every model at every cut-off",
            _dots(rows, models, names, ks),
            "Full ranking: every catalog item is a candidate. Higher is better; best first in each panel.",
        ),
        (
            "Cold and warm items, light and heavy users",
            _panels(
                rows,
                models,
                names,
                [
                    ("warm_items", "warm items"),
                    ("cold_items", "cold items (no training events)"),
                    ("light_users", "light users"),
                    ("heavy_users", "heavy users"),
                ],
                "recall",
                k_main,
            ),
            "Cold items had no interactions before the cut: collaborative models cannot recommend them.",
        ),
        ("Coverage, diversity, novelty, concentration", _beyond(rows, models, names, k_main), ""),
    ]
    if cats:
        sections.append(
            (
                "By top-level category of the held-out item",
                _panels(
                    rows,
                    models,
                    names,
                    [(c, c.removeprefix("category=")) for c in cats[:8]],
                    "recall",
                    k_main,
                ),
                "",
            )
        )
    scores = _scores(spark, cfg, models, names, f"eval:{split}")
    if scores:
        sections.append(
            (
                "Score distributions",
                scores,
                "Each model's scores on its own scale: top-1 against the whole list.",
            )
        )
    loss = _losses(curves)
    sections.append(
        ("Training", loss, "")
        if loss
        else ("Training", None, "No fine-tuned model has been evaluated in this run yet.")
    )
    parts = []
    for title, img, note in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f"<p class=note>{html.escape(note)}</p>")
        if img:
            parts.append(f'<img src="{img}" alt="{html.escape(title)}">')
    title = f"shoprec evaluation {html.escape(run_id)}"
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    verdict_img = f'<img src="{verdict_png}" alt="served lists against the baselines">' if verdict_png else ""
    counts = set(users.values())
    counted = (
        f"{counts.pop():,} for every model"
        if len(counts) == 1
        else ", ".join(f"{html.escape(names[m])} {n:,}" for m, n in users.items())
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head><body>
<h1>shoprec evaluation</h1>
{sentence}
{verdict_img}
<p class=note>Run <code>{html.escape(run_id)}</code> on the <b>{html.escape(str(split))}</b> split;
generated {when}. Full ranking scores every catalog item; sampled ranking ranks each held-out item
against its own negatives (labelled with where they came from). Bold: best per column.
Users evaluated: {counted}.</p>
<h2>All models</h2>
{_table(rows, models, names, ks)}
{_reach(reach)}
{_ranker(ranker)}
{_reasons(spark, cfg)}
{"".join(parts)}
</body></html>"""
    target = Path(out) if out else Path(cfg.path("reports")) / f"evaluation-{run_id}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    log.info("report written: %s", target)
    return target


def screenshot(page: Path, png: Path, width: int = 1300, height: int = 1400) -> Path:
    """The page's first ``height`` pixels as a PNG, rendered by a headless Chromium (Debian's
    ``chromium``): what a reader sees first, for the README and for checking charts by eye."""
    import shutil
    import subprocess

    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        raise ShoprecError(
            "no headless Chromium on PATH: install Debian's package `chromium` to take screenshots"
        )
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for Chromium's sandbox
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--screenshot={png.resolve()}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if not png.is_file():
        raise ShoprecError(f"{browser} wrote no screenshot of {page}: {done.stderr.strip()[-300:]}")
    return png
