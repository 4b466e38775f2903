"""SASRec, the sequential baseline: it learns a sequential pattern a popularity count cannot."""

from __future__ import annotations

import numpy as np

from shoprec.modeling import sasrec as sr


def test_sasrec_learns_what_comes_next() -> None:
    # every user walks the catalog in steps of one from a random start: the next item is the
    # last one plus one, which only a model of the order (not of popularity) can know
    rng = np.random.default_rng(0)
    n_items = 30
    sequences = []
    for _ in range(300):
        start, length = int(rng.integers(1, n_items - 8)), int(rng.integers(4, 9))
        sequences.append(np.arange(start, start + length, dtype=np.int64))
    spec = sr.SasrecSpec(
        dim=16, layers=1, heads=1, max_len=10, dropout=0.0, learning_rate=3e-3, max_epochs=40, patience=5
    )
    model, record = sr.fit(sequences, n_items, spec)
    # popularity would place the next item about 1 in 8 within its top 10 (NDCG near 0.1)
    assert record["valid_ndcg_at_10"] > 0.5, record
    probe = [np.array([3, 4, 5]), np.array([10, 11, 12, 13])]
    scores = sr.encode(model, probe) @ model.items.weight.detach().numpy().T
    scores[:, 0] = -np.inf
    top3 = np.argsort(-scores, axis=1)[:, :3]
    assert 6 in top3[0] and 14 in top3[1], top3
