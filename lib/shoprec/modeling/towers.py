"""The two-tower retriever: one pretrained encoder, a projection per tower, unit vectors.

The towers share the encoder (half the weights, and user history text and item text are the
same kind of text); each has its own linear projection, initialised to the identity so training
starts exactly at the zero-shot encoder and can only move away from it by learning.

Saved as a directory that needs no shoprec code to read the encoder: the (LoRA-merged) encoder
and tokenizer in transformers format, plus ``towers.pt`` (the projections) and
``shoprec_model.json`` (pooling, lengths, temperature).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shoprec import errors
from shoprec.errors import ShoprecError

log = logging.getLogger(__name__)
META = "shoprec_model.json"
TOWERS = "towers.pt"


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where ``mask`` is 1 (the pooling all-MiniLM-L6-v2 was trained with)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class TwoTower(nn.Module):
    def __init__(self, encoder: Any, temperature: float = 0.05) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.user_proj = nn.Linear(hidden, hidden)
        self.item_proj = nn.Linear(hidden, hidden)
        for proj in (self.user_proj, self.item_proj):
            nn.init.eye_(proj.weight)
            nn.init.zeros_(proj.bias)
        self.temperature = temperature

    def _embed(self, ids: torch.Tensor, mask: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return nn.functional.normalize(proj(mean_pool(hidden, mask)), dim=-1)

    def users(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._embed(ids, mask, self.user_proj)

    def items(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._embed(ids, mask, self.item_proj)


def in_batch_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    item_index: torch.Tensor,
    logq: torch.Tensor | None,
    temperature: float,
    hard: torch.Tensor | None = None,
    hard_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax over the batch's items: each user's own item is the positive, the others
    are negatives. ``logq`` (log sampling frequency) is subtracted so popular items, which show
    up as negatives more often, are not pushed down for being popular; other rows with the same
    item are masked, not counted as negatives.

    ``hard`` (one extra item vector per row, ``hard_index`` its item) adds hard negatives as more
    columns, shared by the whole batch; they were not drawn by the in-batch process, so no logQ
    correction, and a hard item that is some row's positive is masked for that row.
    """
    logits = users @ items.T / temperature
    if logq is not None:
        logits = logits - logq.unsqueeze(0)
    same = item_index.unsqueeze(0) == item_index.unsqueeze(1)
    eye = torch.eye(len(item_index), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same & ~eye, torch.finfo(logits.dtype).min)
    if hard is not None and hard_index is not None:
        extra = users @ hard.T / temperature
        own = item_index.unsqueeze(1) == hard_index.unsqueeze(0)
        invalid = (hard_index < 0).unsqueeze(0)  # rows without a hard negative
        logits = torch.cat([logits, extra.masked_fill(own | invalid, torch.finfo(extra.dtype).min)], dim=1)
    target = torch.arange(len(item_index), device=logits.device)
    return nn.functional.cross_entropy(logits, target)


def freeze_lower(encoder: Any, layers: int) -> None:
    """Freeze the embeddings and the lowest ``layers`` transformer layers (BERT-style encoders)."""
    if layers <= 0:
        return
    for p in encoder.embeddings.parameters():
        p.requires_grad = False
    for layer in encoder.encoder.layer[:layers]:
        for p in layer.parameters():
            p.requires_grad = False


def with_lora(encoder: Any, r: int, alpha: int, dropout: float) -> Any:
    """Wrap the encoder's attention projections in LoRA adapters (peft)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=["query", "key", "value"])
    return get_peft_model(encoder, config)


def save(model: TwoTower, tokenizer: Any, path: Path, meta: dict[str, Any]) -> None:
    """Write the model directory (LoRA adapters merged into the encoder first)."""
    path.mkdir(parents=True, exist_ok=True)
    encoder = model.encoder
    if hasattr(encoder, "merge_and_unload"):
        encoder = encoder.merge_and_unload()
    encoder.save_pretrained(path)
    tokenizer.save_pretrained(path)
    torch.save(
        {"user_proj": model.user_proj.state_dict(), "item_proj": model.item_proj.state_dict()}, path / TOWERS
    )
    (path / META).write_text(json.dumps({"temperature": model.temperature, **meta}, indent=2, sort_keys=True))


def load_meta(path: str | Path) -> dict[str, Any]:
    """The settings a model directory was trained with (empty for a plain pretrained encoder)."""
    file = Path(path) / META
    if not file.is_file():
        return {}
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise damaged(file, e) from e
    if not isinstance(meta, dict):
        raise damaged(file, f"holds a {type(meta).__name__}, not an object")
    return meta


def load(path: str | Path) -> tuple[Any, TwoTower, dict[str, Any]]:
    """(tokenizer, model, meta) from a directory written by :func:`save`."""
    from shoprec.modeling.pretrained import load_encoder

    path = Path(path)
    tokenizer, encoder = load_encoder(path)
    meta = load_meta(path)
    model = TwoTower(encoder, float(meta.get("temperature", 0.05)))
    if (path / TOWERS).is_file():
        try:
            state = torch.load(path / TOWERS, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, not a torch file, or pickled objects weights_only refuses
            raise damaged(path / TOWERS, e) from e
        try:
            model.user_proj.load_state_dict(state["user_proj"])
            model.item_proj.load_state_dict(state["item_proj"])
        except (RuntimeError, KeyError, TypeError, AttributeError) as e:  # another shape or a missing tower
            raise damaged(path / TOWERS, e) from e
    return tokenizer, model.eval(), meta


def damaged(path: Path, reason: object) -> ShoprecError:
    """The one-line error for a saved retriever that cannot be loaded: retraining rewrites it whole."""
    why = errors.reason(reason)
    return ShoprecError(f"{path}: damaged retriever ({why}); retrain with `shoprec train`")
