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

log = logging.getLogger(__name__)
STYLE = (
    "body{font-family:sans-serif;max-width:1300px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "td.best{font-weight:bold;background:#e8f4e8}img{max-width:100%}.note{color:#555}"
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


def _curves(rows: Sequence[dict[str, Any]], models: list[str], ks: list[int]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, metric, title in zip(
        axes, ("recall", "ndcg", "hit_rate"), ("Recall@K", "NDCG@K", "HitRate@K"), strict=True
    ):
        for i, model in enumerate(models):
            ys = [_value(rows, model, "full", "all", metric, k) for k in ks]
            ax.plot(
                ks,
                [y if y is not None else float("nan") for y in ys],
                marker="o",
                label=model,
                color=plt.get_cmap("tab20")(i % 20),  # 20 distinct colours: every model its own
                linestyle="--" if " " in model else "-",  # the scoring job's steps dashed
            )
        ax.set_title(f"{title}, full ranking over the catalog")
        ax.set_xlabel("K (list length)")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean over test users (higher is better)")
    axes[-1].legend(fontsize=8)
    return _png(fig)


def _grouped_bars(
    rows: Sequence[dict[str, Any]],
    models: list[str],
    groups: list[tuple[str, str]],
    metric: str,
    k: int,
    title: str,
) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(9.0, 0.9 * len(models)), 4.5))
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(models))
    for i, (slice_, label) in enumerate(groups):
        ys = [_value(rows, m, "full", slice_, metric, k) or 0.0 for m in models]
        bars = ax.bar(x + i * width, ys, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x + width * (len(groups) - 1) / 2, models, rotation=30, ha="right")
    ax.set_ylabel(f"{metric}@{k}")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def _beyond(rows: Sequence[dict[str, Any]], models: list[str], k: int) -> str:
    import matplotlib.pyplot as plt

    panels = (
        ("coverage", "Catalog coverage (share of items ever shown)"),
        ("diversity_category", "Intra-list diversity (different leaf categories)"),
        ("novelty", "Novelty (bits: higher = less popular items)"),
        ("exposure_gini", "Exposure Gini (0 even, 1 concentrated)"),
    )
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        ys = [_value(rows, m, "full", "all", metric, k) or 0.0 for m in models]
        bars = ax.barh(models, ys, color="tab:gray")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_title(f"{title}\n@{k}", fontsize=9)
        ax.invert_yaxis()
    return _png(fig)


def _scores(spark: SparkSession, cfg: ShoprecConfig, models: list[str], scenario: str) -> str | None:
    import matplotlib.pyplot as plt

    recs = delta.read(spark, cfg.table("recommendations")).where(F.col(S.SCENARIO) == scenario)
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3), squeeze=False)
    drawn = False
    for ax, model in zip(axes[0], models, strict=True):
        sample = recs.where(F.col(S.MODEL) == model).select(S.RANK, S.SCORE).limit(SCORE_SAMPLE).toPandas()
        if sample.empty:
            ax.set_visible(False)
            continue
        drawn = True
        top = sample[sample[S.RANK] == 1][S.SCORE]
        ax.hist(sample[S.SCORE], bins=40, alpha=0.6, label="all ranks")
        ax.hist(top, bins=40, alpha=0.8, label="rank 1")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("score (model's own scale)")
    axes[0][0].set_ylabel("recommendations")
    axes[0][-1].legend(fontsize=7)
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


def _table(rows: Sequence[dict[str, Any]], models: list[str], ks: list[int]) -> str:
    sampled = sorted({str(r[S.RANKING]) for r in rows if str(r[S.RANKING]).startswith("sampled")})
    cols: list[tuple[str, str, int]] = [
        ("full", m, k) for m in ("recall", "ndcg", "hit_rate", "precision", "map") for k in ks
    ]
    cols += [("full", "mrr", 0)]
    cols += [(rk, m, 10) for rk in sampled for m in ("hit_rate", "ndcg")]
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
        body.append(f"<tr><th>{html.escape(model)}</th>{cells}</tr>")
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
    features with the largest share of the booster's total gain (why the lists are ordered so)."""
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
    return (
        f"<h2>The ranker</h2><p class=note>Ordered by <b>{chosen}</b> ({objective}), "
        f"fitted on {int(meta.get('lists', 0)):,} candidate lists of the validation cut; held-out "
        f"NDCG@10: {figures or '-'}. Share of the booster's gain, top {top} of {len(gains)} features:</p>"
        f"<table><tr><th>feature</th><th>gain share</th></tr>{rows}</table>"
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
    models = sorted({r[S.MODEL] for r in rows})
    ks = sorted({int(r[S.K]) for r in rows if r[S.METRIC] == "recall"})
    split = rows[0][S.SPLIT]
    k_main = 10 if 10 in ks else ks[0]
    cats = sorted({r[S.SLICE] for r in rows if str(r[S.SLICE]).startswith("category=")})
    users = {r[S.MODEL]: r[S.USERS] for r in rows if r[S.SLICE] == "all" and r[S.METRIC] == "recall"}
    sections: list[tuple[str, str | None, str]] = [
        (
            "Ranking quality at every cut-off",
            _curves(rows, models, ks),
            "Higher is better. Every catalog item is a candidate.",
        ),
        (
            "Cold and warm items, light and heavy users",
            _grouped_bars(
                rows,
                models,
                [
                    ("warm_items", "warm items"),
                    ("cold_items", "cold items (no training events)"),
                    ("light_users", "light users"),
                    ("heavy_users", "heavy users"),
                ],
                "recall",
                k_main,
                f"Recall@{k_main} by slice of the held-out events",
            ),
            "Cold items had no interactions before the cut: collaborative models cannot recommend them.",
        ),
        ("Coverage, diversity, novelty, concentration", _beyond(rows, models, k_main), ""),
    ]
    if cats:
        sections.append(
            (
                "By top-level category of the held-out item",
                _grouped_bars(
                    rows,
                    models,
                    [(c, c.removeprefix("category=")) for c in cats[:8]],
                    "recall",
                    k_main,
                    f"Recall@{k_main} per category",
                ),
                "",
            )
        )
    scores = _scores(spark, cfg, models, f"eval:{split}")
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
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head><body>
<h1>shoprec evaluation</h1>
<p>Run <code>{html.escape(run_id)}</code> on split <b>{html.escape(str(split))}</b>; generated {when}.
Users evaluated: {", ".join(f"{html.escape(m)} {n:,}" for m, n in users.items())}.
Full ranking scores every catalog item; sampled ranking ranks each held-out item against its own negatives
(labelled with where they came from). Bold: best per column.</p>
{_table(rows, models, ks)}
{_reach(reach)}
{_ranker(ranker)}
{"".join(parts)}
</body></html>"""
    target = Path(out) if out else Path(cfg.path("reports")) / f"evaluation-{run_id}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    log.info("report written: %s", target)
    return target
