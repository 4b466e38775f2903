"""SASRec (Kang & McAuley, 2018): the standard ID-based sequential recommender, as a baseline.

Written in torch after the paper, since no maintained SASRec library installs on this stack
(RecBole pins old numpy/torch). Each user is the sequence of items they interacted with, oldest
first; a causal transformer reads it, and the hidden state at each position scores the next item
against the (shared) item embeddings. Trained with the full softmax over the catalog (small
catalogs make it cheap, and it beats the paper's one-negative loss), early-stopped on each user's
last visible item predicted from the items before it. The user's vector is the hidden state after
their whole visible history and the items' are the embedding rows, so retrieval is a dot product
like every other baseline's.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SasrecSpec:
    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 100
    patience: int = 8
    seed: int = 11
    threads: int = 2


class SASRec(nn.Module):
    def __init__(self, n_items: int, spec: SasrecSpec) -> None:
        super().__init__()
        self.spec = spec
        self.items = nn.Embedding(n_items + 1, spec.dim, padding_idx=0)  # 0 pads
        self.positions = nn.Embedding(spec.max_len, spec.dim)
        layer = nn.TransformerEncoderLayer(
            spec.dim, spec.heads, spec.dim * 2, spec.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, spec.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(spec.dim)
        self.drop = nn.Dropout(spec.dropout)
        # positions start as small as items: at torch's default N(0, 1) they drowned the items'
        # signal (x √dim ≈ 0.16) and training stopped early on sparse data (Office 2014
        # validation NDCG@10 .0089 -> .0121; the demo's .183 -> .176, within its noise)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``(batch, len)`` item indices (0 = padding, left-padded) → ``(batch, len, dim)``."""
        length = seq.shape[1]
        pos = torch.arange(length, device=seq.device).unsqueeze(0)
        x = self.items(seq) * math.sqrt(self.spec.dim) + self.positions(pos)
        x = self.drop(x) * (seq > 0).unsqueeze(-1)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
        h = self.encoder(x, mask=causal, src_key_padding_mask=seq == 0)
        out: torch.Tensor = self.norm(torch.nan_to_num(h))
        return out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.items.weight.T  # index 0 (padding) is masked by the caller


def _pad(seqs: list[NDArray[Any]], length: int) -> NDArray[np.int64]:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s) :] = s
    return out


def fit(sequences: list[NDArray[Any]], n_items: int, spec: SasrecSpec) -> tuple[SASRec, dict[str, Any]]:
    """Train on ``sequences`` (item indices 1..n_items, oldest first); returns the model and a
    short record (epochs, validation NDCG@10, seconds)."""
    torch.manual_seed(spec.seed)
    torch.set_num_threads(spec.threads)
    rng = np.random.default_rng(spec.seed)
    started = time.perf_counter()
    model = SASRec(n_items, spec)
    opt = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    # training inputs: every sequence but its last item; validation: that last item
    usable = [s for s in sequences if len(s) >= 3]
    train = _pad([s[:-1] for s in usable], spec.max_len + 1)
    valid_in = torch.from_numpy(_pad([s[:-1] for s in usable], spec.max_len))
    valid_out = np.array([s[-1] for s in usable])
    best, best_state, bad, epochs = -1.0, None, 0, 0
    for epoch in range(1, spec.max_epochs + 1):
        epochs = epoch
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(order), spec.batch_size):
            rows = train[order[start : start + spec.batch_size]]
            used = int((rows > 0).any(axis=0).argmax())  # left-padded: drop all-padding columns
            batch = torch.from_numpy(rows[:, min(used, rows.shape[1] - 2) :])
            inputs, targets = batch[:, :-1], batch[:, 1:]
            mask = targets > 0
            logits = model.logits(model(inputs)[mask])  # only where there is a next item
            logits[:, 0] = -1e9
            loss = nn.functional.cross_entropy(logits, targets[mask])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        score = _ndcg10(model, valid_in, valid_out)
        if score > best:
            best, bad = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= spec.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    record = {"epochs": epochs, "valid_ndcg_at_10": best, "seconds": time.perf_counter() - started}
    log.info("SASRec: %d sequences, %d epochs, validation NDCG@10 %.4f (%.0fs)", len(usable), epochs, best,
             record["seconds"])  # fmt: skip
    return model, record


def _ndcg10(model: SASRec, inputs: torch.Tensor, targets: NDArray[Any]) -> float:
    hidden = user_vectors(model, inputs)
    scores = hidden @ model.items.weight.detach().numpy().T
    scores[:, 0] = -np.inf
    target = scores[np.arange(len(targets)), targets]
    rank = (scores > target[:, None]).sum(axis=1)
    return float(np.mean(np.where(rank < 10, 1.0 / np.log2(rank + 2), 0.0)))


def user_vectors(model: SASRec, padded: torch.Tensor, batch: int = 512) -> NDArray[np.float32]:
    """The hidden state after each (left-padded) sequence: the user's vector."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(padded), batch):
            out.append(model(padded[start : start + batch])[:, -1, :].numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.spec.dim), np.float32)


def encode(model: SASRec, sequences: list[NDArray[Any]]) -> NDArray[np.float32]:
    return user_vectors(model, torch.from_numpy(_pad(sequences, model.spec.max_len)))
