"""Business re-ranking of users' scored candidates, per scenario (``scoring.scenarios``).

Rules run in a fixed order, each switchable per scenario: drop out-of-stock items; drop items
already bought (except in repeat-purchase categories); price affinity (penalise the gap between
the item's and the user's price band); a promotion boost (the discount); diversity (a cap per
top-level category, or maximal marginal relevance on item embeddings). The starting score is the
ranker's heads combined by the scenario's weights (:func:`shoprec.modeling.ranker.combine`), a
log-probability, so adjustments add to it.

Every kept item carries the names of the rules that *moved* it: a score adjustment moved an item
if its position among the surviving items changed; diversity moved an item if its place in the
list differs from its place in the order before diversity. Dropping an item moves nobody.

The rules run on many users at once (:func:`rerank_many`): every step is a sort or a grouped
count over all their candidates, so a batch of thousands of users costs a few numpy calls rather
than a pandas call per user (which made per-user ``applyInPandas`` the slowest part of scoring).
Only MMR, a greedy choice, loops over users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from shoprec import schemas as S
from shoprec.config import ScenarioConfig
from shoprec.modeling import ranker as rk

BOUGHT, BAND_GAP, DISCOUNT, RULES = "bought", "band_gap", "discount", "rules"
OUT_OF_STOCK, ALREADY_BOUGHT, PRICE, PROMOTION, CATEGORY_CAP, MMR = (
    "out_of_stock",
    "already_bought",
    "price_affinity",
    "promotion",
    "category_cap",
    "mmr",
)
#: The column :func:`rerank_many` groups by: one value per user (any sortable values).
GROUP = "_group"


def _positions(group: NDArray[Any], score: NDArray[Any], item: NDArray[Any]) -> NDArray[Any]:
    """Each row's place in its group, best score first, ties by item id (codes in id order), so
    the order is the same on every run."""
    order = np.lexsort((item, -score, group))
    g = group[order]
    first = np.searchsorted(g, g, side="left")
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order)) - first
    return pos


def _cumcount(keys: list[NDArray[Any]], mask: NDArray[Any] | None = None) -> NDArray[Any]:
    """Per row (rows already in list order), how many earlier rows share its keys (and ``mask``)."""
    frame = pd.DataFrame({f"k{i}": k for i, k in enumerate(keys)})
    ones = np.ones(len(frame), dtype=np.int64) if mask is None else mask.astype(np.int64)
    counted = frame.assign(_n=ones).groupby(list(frame.columns), sort=False)["_n"].cumsum() - ones
    return counted.to_numpy()


def _cap(group: NDArray[Any], pos: NDArray[Any], category: NDArray[Any], cap: int, k: int) -> NDArray[Any]:
    """Final places under a per-category cap: best first, at most ``cap`` per category, the list
    then filled from the skipped items in order; -1 for rows left out."""
    order = np.lexsort((pos, group))  # list order
    g, c = group[order], category[order]
    taken = _cumcount([g, c]) < cap
    taken_pos = _cumcount([g], taken)
    skip_pos = _cumcount([g], ~taken)
    n_taken = pd.Series(taken.astype(np.int64)).groupby(g, sort=False).transform("sum").to_numpy()
    n_taken = np.minimum(n_taken, k)
    final_sorted = np.where(taken, taken_pos, n_taken + skip_pos)
    final = np.empty(len(order), dtype=np.int64)
    final[order] = np.where(final_sorted < k, final_sorted, -1)
    return final


def _mmr(
    group: NDArray[Any], pos: NDArray[Any], score: NDArray[Any], vectors: Any, lam: float, k: int
) -> NDArray[Any]:
    """Final places by greedy maximal marginal relevance, per user: λ·relevance (the score scaled
    to [0, 1] within the user) − (1−λ)·max cosine to what is already chosen; -1 for rows left out."""
    final = np.full(len(group), -1, dtype=np.int64)
    order = np.lexsort((pos, group))
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    for rows in np.split(order, bounds):
        if not len(rows):
            continue
        rel = score[rows].astype(np.float64)
        span = rel.max() - rel.min()
        rel = (rel - rel.min()) / span if span > 0 else np.zeros_like(rel)
        vec = np.stack([np.asarray(vectors[r], dtype=np.float32) for r in rows])
        norms = np.linalg.norm(vec, axis=1, keepdims=True)
        vec = vec / np.where(norms > 0, norms, 1.0)
        max_sim = np.full(len(rows), -np.inf)
        remaining = np.ones(len(rows), dtype=bool)
        for place in range(min(k, len(rows))):
            penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
            gain = np.where(remaining, lam * rel - (1 - lam) * penalty, -np.inf)
            best = int(np.argmax(gain))  # ties: the earlier (better-ranked) item
            final[rows[best]] = place
            remaining[best] = False
            max_sim = np.maximum(max_sim, vec @ vec[best])
    return final


def rerank_many(df: pd.DataFrame, sc: ScenarioConfig) -> pd.DataFrame:
    """Many users' candidates (``_group`` names the user) → each user's top ``k``:
    ``_group, item_id, rank, score, source, rules``, sorted by user and rank."""
    columns = [GROUP, S.ITEM_ID, S.RANK, S.SCORE, S.SOURCE, RULES]
    score = rk.combine(
        df[rk.P_CLICK].to_numpy(dtype=np.float64),
        df[rk.P_PURCHASE].to_numpy(dtype=np.float64),
        df[rk.VALUE].to_numpy(dtype=np.float64),
        sc.weights,
    )
    keep = np.ones(len(df), dtype=bool)
    if sc.drop_out_of_stock:
        keep &= df[S.IN_STOCK].fillna(False).to_numpy(dtype=bool)
    if sc.exclude_bought:
        repeat = df[S.TOP_CATEGORY].isin(list(sc.repeat_categories)).to_numpy(dtype=bool)
        keep &= ~df[BOUGHT].fillna(False).to_numpy(dtype=bool) | repeat
    df, score = df[keep].reset_index(drop=True), score[keep]
    if df.empty:
        return pd.DataFrame({c: [] for c in columns})
    group = pd.factorize(df[GROUP], sort=True)[0]
    item = pd.factorize(df[S.ITEM_ID], sort=True)[0]
    pos = _positions(group, score, item)
    moved: list[tuple[str, NDArray[Any]]] = []
    for name, weight, column in (
        (PRICE, -sc.price_affinity, BAND_GAP),
        (PROMOTION, sc.promotion_boost, DISCOUNT),
    ):
        if weight == 0:
            continue
        score = score + weight * df[column].fillna(0.0).to_numpy(dtype=np.float64)
        after = _positions(group, score, item)
        moved.append((name, after != pos))
        pos = after
    if sc.diversity == "category_cap":
        category = pd.factorize(df[S.TOP_CATEGORY].fillna(""))[0]
        final = _cap(group, pos, category, sc.category_cap, sc.k)
        moved.append((CATEGORY_CAP, (final >= 0) & (final != pos)))
    elif sc.diversity == "mmr":
        final = _mmr(group, pos, score, df[rk.ITEM_VECTOR].to_numpy(), sc.mmr_lambda, sc.k)
        moved.append((MMR, (final >= 0) & (final != pos)))
    else:
        final = np.where(pos < sc.k, pos, -1)
    chosen = np.flatnonzero(final >= 0)
    chosen = chosen[np.lexsort((final[chosen], group[chosen]))]
    flags = [(name, m[chosen]) for name, m in moved]
    return pd.DataFrame(
        {
            GROUP: df[GROUP].to_numpy()[chosen],
            S.ITEM_ID: df[S.ITEM_ID].to_numpy()[chosen],
            S.RANK: (final[chosen] + 1).astype(np.int32),
            S.SCORE: np.round(score[chosen], 6),
            S.SOURCE: df[S.SOURCE].to_numpy()[chosen],
            RULES: [[name for name, m in flags if m[i]] for i in range(len(chosen))],
        }
    )


def rerank(pdf: pd.DataFrame, sc: ScenarioConfig) -> pd.DataFrame:
    """One user's candidates → the scenario's top ``k``: ``item_id, rank, score, source, rules``."""
    out = rerank_many(pdf.assign(**{GROUP: 0}), sc)
    return out.drop(columns=[GROUP]).reset_index(drop=True)


def arrow_runner(sc: ScenarioConfig, fields: list[str]) -> Callable[[Iterable[Any]], Iterable[Any]]:
    """The function ``mapInArrow`` runs over candidates sorted by user within each partition:
    users whose rows continue into the next batch are held back and joined to it, so every user's
    candidates are re-ranked together; each call re-ranks all the users of a batch at once."""

    def lists(table: Any) -> Any:
        import pyarrow as pa

        schema = pa.schema(
            [
                (S.USER_KEY, pa.string()),
                (S.ITEM_ID, pa.string()),
                (S.RANK, pa.int32()),
                (S.SCORE, pa.float64()),
                (S.SOURCE, pa.string()),
                (RULES, pa.list_(pa.string())),
            ]
        )

        pdf = table.select(fields).to_pandas()
        out = rerank_many(pdf.rename(columns={S.USER_KEY: GROUP}), sc).rename(columns={GROUP: S.USER_KEY})
        out = out[[S.USER_KEY, S.ITEM_ID, S.RANK, S.SCORE, S.SOURCE, RULES]]
        return pa.RecordBatch.from_pandas(out, schema=schema, preserve_index=False)

    def run(batches: Iterable[Any]) -> Iterable[Any]:
        import pyarrow as pa
        import pyarrow.compute as pc

        held: Any = None
        for batch in batches:
            table = pa.Table.from_batches([batch])
            if held is not None:
                table = pa.concat_tables([held, table])
            users = table.column(S.USER_KEY)
            # the last user's rows may go on in the next batch: hold them back
            same = pc.equal(users, users[len(users) - 1]).to_numpy()
            tail = len(same) if same.all() else int(np.argmin(same[::-1]))
            held, ready = table.slice(len(same) - tail), table.slice(0, len(same) - tail)
            if ready.num_rows:
                yield lists(ready)
        if held is not None and held.num_rows:
            yield lists(held)

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
