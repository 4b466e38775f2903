"""SASRec (Kang & McAuley, 2018): the standard ID-based sequential recommender, as a baseline.

Written in torch after the paper, since no maintained SASRec library installs on this stack
(RecBole pins old numpy/torch). Each user is the sequence of items they interacted with, oldest
first; a causal transformer reads it, and the hidden state at each position scores the next item
against the (shared) item embeddings. Trained with the full softmax over the catalog (small
catalogs make it cheap, and it beats the paper's one-negative loss), early-stopped on each user's
last visible item predicted from the items before it. The user's vector is the hidden state after
their whole visible history and the items' are the embedding rows, so retrieval is a dot product
like every other baseline's.

The same network is shoprec's *sequence retriever* (UniSRec / Recformer style) when it is given
the items' text vectors from the pretrained transformer: each item is then a learned projection
of its frozen, centred text vector (UniSRec's parametric whitening) plus, optionally, its own ID
embedding, and each step also carries the time since the step before (log-scale buckets). Text
makes an item that few users touched as well placed as its words: on sparse catalogs the ID-only
network learns little more than popularity.
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
    #: With text vectors: keep an ID embedding beside the projected text (False: text only).
    ids: bool = True
    #: Embed the time since the previous step (log2 minutes, :data:`GAP_BUCKETS` buckets).
    time_gaps: bool = False


#: Time-gap buckets: ``floor(log2(1 + minutes))`` capped, so one bucket spans about a minute at
#: the start and months at the end (2^20 minutes is two years).
GAP_BUCKETS = 21


def gap_buckets(seconds: NDArray[Any]) -> NDArray[np.int64]:
    """Bucket of each step's time since the step before (the first step: bucket 0)."""
    minutes = np.maximum(np.asarray(seconds, dtype=np.float64), 0.0) / 60.0
    buckets: NDArray[np.int64] = np.minimum(np.floor(np.log2(1.0 + minutes)), GAP_BUCKETS - 1).astype(
        np.int64
    )
    return buckets


class SASRec(nn.Module):
    def __init__(self, n_items: int, spec: SasrecSpec, text: NDArray[Any] | None = None) -> None:
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
        self.use_ids = text is None or spec.ids
        self.adapter: nn.Linear | None = None
        if text is not None:  # row i is item i's frozen text vector; row 0 (padding) zeros
            table = torch.zeros(n_items + 1, text.shape[1])
            table[1:] = torch.from_numpy(np.asarray(text, dtype=np.float32))
            self.register_buffer("text", table)
            self.register_buffer("text_mean", table[1:].mean(0, keepdim=True))
            self.adapter = nn.Linear(text.shape[1], spec.dim)
        self.gaps = nn.Embedding(GAP_BUCKETS, spec.dim) if spec.time_gaps else None
        if self.gaps is not None:
            nn.init.normal_(self.gaps.weight, std=0.02)

    def item_table(self) -> torch.Tensor:
        """``(n_items + 1, dim)``: each item's input and output vector (row 0 pads)."""
        table = self.items.weight if self.use_ids else torch.zeros_like(self.items.weight)
        if self.adapter is not None:
            text: torch.Tensor = self.text  # type: ignore[assignment]
            mean: torch.Tensor = self.text_mean  # type: ignore[assignment]
            projected = self.adapter(text - mean)
            table = table + projected * (text.abs().sum(1, keepdim=True) > 0)
        return table

    def forward(self, seq: torch.Tensor, gaps: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, len)`` item indices (0 = padding, left-padded), with each step's time-gap
        bucket when the model embeds them → ``(batch, len, dim)``."""
        # positions count from the right (the newest step is always the last position): training
        # trims a batch's all-padding columns and inference pads to max_len, so positions counted
        # from the left put the newest step at a different position in each
        length = seq.shape[1]
        pos = torch.arange(length, device=seq.device).unsqueeze(0) + max(0, self.spec.max_len - length)
        x = self.item_table()[seq] * math.sqrt(self.spec.dim) + self.positions(pos)
        if self.gaps is not None and gaps is not None:
            x = x + self.gaps(gaps)
        x = self.drop(x) * (seq > 0).unsqueeze(-1)
        h = self.encoder(x, mask=attention_mask(seq, self.spec.heads))
        out: torch.Tensor = self.norm(h)
        return out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.item_table().T  # index 0 (padding) is masked by the caller


def attention_mask(seq: torch.Tensor, heads: int) -> torch.Tensor:
    """``(batch * heads, len, len)``, True where a position may not look: ahead of itself (causal)
    or at padding, except that every position sees itself. Left padding with a padding mask alone
    leaves a padding row nothing to attend to; torch's fast inference path then returns NaN there,
    and a second layer spread it over the real positions (every padded user got one vector)."""
    length = seq.shape[1]
    ahead = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
    padding = (seq == 0).unsqueeze(1).expand(-1, length, -1)
    itself = torch.eye(length, dtype=torch.bool, device=seq.device)
    blocked = (ahead | padding) & ~itself
    return blocked.repeat_interleave(heads, dim=0)


def _pad(seqs: list[NDArray[Any]], length: int) -> NDArray[np.int64]:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s) :] = s
    return out


def fit(
    sequences: list[NDArray[Any]],
    n_items: int,
    spec: SasrecSpec,
    text: NDArray[Any] | None = None,
    gaps: list[NDArray[Any]] | None = None,
) -> tuple[SASRec, dict[str, Any]]:
    """Train on ``sequences`` (item indices 1..n_items, oldest first; with ``text``, row i - 1 is
    item i's text vector; with ``gaps``, each step's :func:`gap_buckets`); returns the model and a
    short record (epochs, validation NDCG@10, seconds)."""
    torch.manual_seed(spec.seed)
    torch.set_num_threads(spec.threads)
    rng = np.random.default_rng(spec.seed)
    started = time.perf_counter()
    model = SASRec(n_items, spec, text)
    opt = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    # training inputs: every sequence but its last item; validation: that last item
    keep = [i for i, s in enumerate(sequences) if len(s) >= 3]
    usable = [sequences[i] for i in keep]
    steps = [gaps[i] for i in keep] if gaps is not None else [np.zeros(len(s), np.int64) for s in usable]
    train = _pad([s[:-1] for s in usable], spec.max_len + 1)
    train_gaps = _pad([g[:-1] for g in steps], spec.max_len + 1)
    valid_in = torch.from_numpy(_pad([s[:-1] for s in usable], spec.max_len))
    valid_gaps = torch.from_numpy(_pad([g[:-1] for g in steps], spec.max_len))
    valid_out = np.array([s[-1] for s in usable])
    best, best_state, bad, epochs = -1.0, None, 0, 0
    for epoch in range(1, spec.max_epochs + 1 if usable else 1):
        epochs = epoch
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(order), spec.batch_size):
            rows = train[order[start : start + spec.batch_size]]
            used = min(int((rows > 0).any(axis=0).argmax()), rows.shape[1] - 2)  # drop all-padding columns
            batch = torch.from_numpy(rows[:, used:])
            batch_gaps = torch.from_numpy(train_gaps[order[start : start + spec.batch_size]][:, used:])
            inputs, targets = batch[:, :-1], batch[:, 1:]
            mask = (inputs > 0) & (targets > 0)  # a padding step does not predict the first item
            logits = model.logits(model(inputs, batch_gaps[:, :-1])[mask])  # only where a next item is
            logits[:, 0] = -1e9
            loss = nn.functional.cross_entropy(logits, targets[mask])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        score = _ndcg10(model, valid_in, valid_gaps, valid_out)
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
    log.info("%s: %d sequences, %d epochs, validation NDCG@10 %.4f (%.0fs)",
             "sequence retriever" if text is not None else "SASRec", len(usable), epochs, best,
             record["seconds"])  # fmt: skip
    return model, record


def item_vectors(model: SASRec) -> NDArray[np.float32]:
    """Row i is item i + 1's output vector (what a user's hidden state is scored against)."""
    with torch.inference_mode():
        return np.asarray(model.item_table()[1:].numpy(), dtype=np.float32)


def _ndcg10(model: SASRec, inputs: torch.Tensor, gaps: torch.Tensor, targets: NDArray[Any]) -> float:
    hidden = user_vectors(model, inputs, gaps)
    scores = hidden @ np.concatenate([np.zeros((1, hidden.shape[1]), np.float32), item_vectors(model)]).T
    scores[:, 0] = -np.inf
    target = scores[np.arange(len(targets)), targets]
    rank = (scores > target[:, None]).sum(axis=1)
    return float(np.mean(np.where(rank < 10, 1.0 / np.log2(rank + 2), 0.0)))


def user_vectors(
    model: SASRec, padded: torch.Tensor, gaps: torch.Tensor | None = None, batch: int = 512
) -> NDArray[np.float32]:
    """The hidden state after each (left-padded) sequence: the user's vector."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(padded), batch):
            g = gaps[start : start + batch] if gaps is not None else None
            out.append(model(padded[start : start + batch], g)[:, -1, :].numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.spec.dim), np.float32)


def encode(
    model: SASRec, sequences: list[NDArray[Any]], gaps: list[NDArray[Any]] | None = None
) -> NDArray[np.float32]:
    padded_gaps = torch.from_numpy(_pad(gaps, model.spec.max_len)) if gaps is not None else None
    return user_vectors(model, torch.from_numpy(_pad(sequences, model.spec.max_len)), padded_gaps)
