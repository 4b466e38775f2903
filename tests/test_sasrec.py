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


def test_sequence_retriever_places_items_it_never_trained_on_by_their_text() -> None:
    # items come in groups (their text says which); users walk from one group to the next. One item
    # per group never occurs in training: an ID embedding knows nothing of it, its text does
    rng = np.random.default_rng(1)
    groups, per = 6, 5
    n_items = groups * per
    text = np.eye(groups, dtype=np.float32).repeat(per, axis=0) + rng.normal(0, 0.05, (n_items, groups))
    unseen = {g * per + 1 for g in range(groups)}  # item indices (1-based): the first of each group
    sequences, gaps = [], []
    for _ in range(400):
        start, length = int(rng.integers(0, groups - 3)), int(rng.integers(3, 5))
        walk = [g * per + int(rng.integers(2, per + 1)) for g in range(start, start + length)]
        sequences.append(np.array(walk, dtype=np.int64))
        gaps.append(sr.gap_buckets(np.concatenate([[0], rng.integers(60, 7200, length - 1)])))
    assert not unseen & {int(i) for s in sequences for i in s}
    spec = sr.SasrecSpec(
        dim=16, layers=1, heads=1, max_len=6, dropout=0.0, learning_rate=3e-3, max_epochs=30, patience=5,
        ids=False, time_gaps=True,
    )  # fmt: skip
    model, record = sr.fit(sequences, n_items, spec, text=text, gaps=gaps)
    probe = [np.array([1 * per + 3, 2 * per + 4])]  # groups 1 then 2: group 3 comes next
    scores = sr.encode(model, probe, [np.array([0, 5])]) @ sr.item_vectors(model).T
    top = set((np.argsort(-scores[0])[:per] + 1).tolist())
    assert 3 * per + 1 in top, (top, record)  # the unseen item of group 3, placed by its text
    assert top <= set(range(3 * per + 1, 4 * per + 1)), top


def test_left_padded_users_get_their_own_vectors_at_inference() -> None:
    """At inference torch takes a faster attention path; with a padding row that could attend to
    nothing it returned NaN, spread over the real positions, and every user shorter than
    ``max_len`` got one and the same vector (SASRec on Office 2014 ranked like popularity). The
    inference output must equal the training path's (dropout off) and differ per user."""
    import torch

    torch.manual_seed(0)
    model = sr.SASRec(50, sr.SasrecSpec(dropout=0.0, layers=2))
    seq = torch.tensor([[0, 0, 5, 6, 7], [0, 1, 2, 3, 4], [1, 2, 3, 4, 8]])
    model.eval()
    with torch.inference_mode():
        served = model(seq)
    model.train()
    with torch.no_grad():
        trained = model(seq)
    assert not torch.isnan(served).any()
    assert torch.allclose(served, trained, atol=1e-4)
    assert (served[0, -1] - served[1, -1]).abs().max() > 1e-3
    vectors = sr.encode(model, [np.array([5, 6, 7]), np.array([1, 2, 3, 4])])
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3


def test_the_newest_step_sits_at_one_position_in_training_and_at_inference() -> None:
    """Training trims a batch's all-padding columns, inference pads to ``max_len``: the same
    sequence must get the same state either way (positions counted from the right), or the
    position a user's newest item is served at is one training rarely saw."""
    import torch

    torch.manual_seed(0)
    spec = sr.SasrecSpec(dropout=0.0, layers=2, max_len=12)
    model = sr.SASRec(50, spec).eval()
    trimmed = torch.tensor([[0, 5, 6, 7], [1, 2, 3, 4]])
    with torch.no_grad():
        short = model(trimmed)[:, -1]
    served = torch.from_numpy(sr.encode(model, [np.array([5, 6, 7]), np.array([1, 2, 3, 4])]))
    assert torch.allclose(short, served, atol=1e-4)
