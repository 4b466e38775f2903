"""Business re-ranking of one user's scored candidates, per scenario (``scoring.scenarios``).

Rules run in a fixed order, each switchable per scenario: drop out-of-stock items; drop items
already bought (except in repeat-purchase categories); price affinity (penalise the gap between
the item's and the user's price band); a promotion boost (the discount); diversity (a cap per
top-level category, or maximal marginal relevance on item embeddings). The starting score is the
ranker's heads combined by the scenario's weights (:func:`shoprec.training.ranker.combine`), a
log-probability, so adjustments add to it.

Every kept item carries the names of the rules that *moved* it: a score adjustment moved an item
if its position among the surviving items changed; diversity moved an item if its place in the
list differs from its place in the order before diversity. Dropping an item moves nobody.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from shoprec import schemas as S
from shoprec.config import ScenarioConfig
from shoprec.training import ranker as rk

BOUGHT, BAND_GAP, DISCOUNT, RULES = "bought", "band_gap", "discount", "rules"
OUT_OF_STOCK, ALREADY_BOUGHT, PRICE, PROMOTION, CATEGORY_CAP, MMR = (
    "out_of_stock",
    "already_bought",
    "price_affinity",
    "promotion",
    "category_cap",
    "mmr",
)


def _order(df: pd.DataFrame) -> list[str]:
    """Items best first (ties broken by item id, so the order is the same on every run)."""
    return list(df.sort_values([S.SCORE, S.ITEM_ID], ascending=[False, True], kind="mergesort")[S.ITEM_ID])


def _moved(before: list[str], after: list[str]) -> set[str]:
    """Items whose position among the items present in both orders changed."""
    keep = set(after)
    kept = [i for i in before if i in keep]
    return {a for a, b in zip(kept, after, strict=True) if a != b}


def _diversify_cap(order: list[str], category: dict[str, str], cap: int, k: int) -> list[str]:
    """Best-first, at most ``cap`` per category; the list is then filled from the skipped items."""
    taken: list[str] = []
    skipped: list[str] = []
    per: dict[str, int] = {}
    for item in order:
        c = category[item]
        if per.get(c, 0) < cap:
            taken.append(item)
            per[c] = per.get(c, 0) + 1
        else:
            skipped.append(item)
        if len(taken) == k:
            break
    return taken + skipped[: k - len(taken)]


def _diversify_mmr(order: list[str], df: pd.DataFrame, lam: float, k: int) -> list[str]:
    """Greedy maximal marginal relevance: λ·relevance − (1−λ)·max cosine to what is already chosen."""
    by_id = df.set_index(S.ITEM_ID)
    ids = order
    rel = by_id.loc[ids, S.SCORE].to_numpy(dtype=np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.zeros_like(rel)
    vectors = np.stack([np.asarray(v, dtype=np.float32) for v in by_id.loc[ids, rk.ITEM_VECTOR]])
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    chosen: list[int] = []
    max_sim = np.full(len(ids), -np.inf)
    remaining = np.ones(len(ids), dtype=bool)
    for _ in range(min(k, len(ids))):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = np.where(remaining, lam * rel - (1 - lam) * penalty, -np.inf)
        best = int(np.argmax(gain))  # ties: the earlier (better-ranked) item
        chosen.append(best)
        remaining[best] = False
        max_sim = np.maximum(max_sim, vectors @ vectors[best])
    return [ids[i] for i in chosen]


def rerank(pdf: pd.DataFrame, sc: ScenarioConfig) -> pd.DataFrame:
    """One user's candidates → the scenario's top ``k``: ``item_id, rank, score, source, rules``."""
    df = pdf.copy()
    df[S.SCORE] = rk.combine(
        df[rk.P_CLICK].to_numpy(), df[rk.P_PURCHASE].to_numpy(), df[rk.VALUE].to_numpy(), sc.weights
    )
    moved: dict[str, list[str]] = {i: [] for i in df[S.ITEM_ID]}
    if sc.drop_out_of_stock:
        df = df[df[S.IN_STOCK].fillna(False).astype(bool)]
    if sc.exclude_bought:
        repeat = df[S.TOP_CATEGORY].isin(list(sc.repeat_categories))
        df = df[~df[BOUGHT].fillna(False).astype(bool) | repeat]
    adjustments: list[tuple[str, float, str]] = [
        (PRICE, -sc.price_affinity, BAND_GAP),
        (PROMOTION, sc.promotion_boost, DISCOUNT),
    ]
    for name, weight, column in adjustments:
        if weight == 0 or df.empty:
            continue
        before = _order(df)
        df = df.assign(**{S.SCORE: df[S.SCORE] + weight * df[column].fillna(0.0).astype(float)})
        for item in _moved(before, _order(df)):
            moved[item].append(name)
    order = _order(df)
    final: list[str]
    if sc.diversity == "category_cap" and not df.empty:
        category = dict(zip(df[S.ITEM_ID], df[S.TOP_CATEGORY].fillna(""), strict=True))
        final = _diversify_cap(order, category, sc.category_cap, sc.k)
        rule = CATEGORY_CAP
    elif sc.diversity == "mmr" and not df.empty:
        final = _diversify_mmr(order, df, sc.mmr_lambda, sc.k)
        rule = MMR
    else:
        final, rule = order[: sc.k], ""
    if rule:  # diversity changes the list itself: an item moved if its place differs
        place = {item: i for i, item in enumerate(order)}
        for i, item in enumerate(final):
            if place[item] != i:
                moved[item].append(rule)
    out = df.set_index(S.ITEM_ID).loc[final].reset_index()
    return pd.DataFrame(
        {
            S.ITEM_ID: out[S.ITEM_ID].to_numpy(),
            S.RANK: np.arange(1, len(out) + 1, dtype=np.int32),
            S.SCORE: np.round(out[S.SCORE].to_numpy(dtype=np.float64), 6),
            S.SOURCE: out[S.SOURCE].to_numpy(),
            RULES: [moved[i] for i in out[S.ITEM_ID]],
        }
    )


def per_user(sc: ScenarioConfig) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function ``applyInPandas`` runs for each user's group."""

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        out = rerank(pdf, sc)
        out.insert(0, S.USER_KEY, pdf[S.USER_KEY].iloc[0] if len(pdf) else None)
        return out

    return run


def ablation(sc: ScenarioConfig, k: int) -> list[tuple[str, ScenarioConfig]]:
    """``sc`` with every rule off, then its rules switched on one at a time in the order they run.

    Each step is labelled by the rule it adds; the last step is ``sc`` itself (with ``k`` items),
    so evaluating the steps side by side shows the accuracy each rule costs or buys.
    """
    current = replace(
        sc,
        k=k,
        drop_out_of_stock=False,
        exclude_bought=False,
        price_affinity=0.0,
        promotion_boost=0.0,
        diversity="none",
    )
    steps = [("(ranker, no rules)", current)]
    changes: list[tuple[str, dict[str, object]]] = [
        (OUT_OF_STOCK, {"drop_out_of_stock": sc.drop_out_of_stock}),
        (ALREADY_BOUGHT, {"exclude_bought": sc.exclude_bought}),
        (PRICE, {"price_affinity": sc.price_affinity}),
        (PROMOTION, {"promotion_boost": sc.promotion_boost}),
        (sc.diversity, {"diversity": sc.diversity}),
    ]
    for rule, change in changes:
        if all(getattr(current, key) == value for key, value in change.items()):
            continue  # the scenario does not use this rule
        current = replace(current, **change)  # type: ignore[arg-type]
        steps.append((f"+ {rule}", current))
    return steps
