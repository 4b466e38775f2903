"""transformers: a tiny BERT built here, saved, and reloaded from its local path with the hub off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import build_tiny_bert
from shoprec.modeling.pretrained import ModelNotFoundError, load_encoder, packaged_model_dir


def test_tiny_bert_saves_and_reloads_offline(tmp_path: Path) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    tokenizer, model = build_tiny_bert(tmp_path / "src")
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")

    tok2, model2 = load_encoder(tmp_path / "saved")
    batch = tok2(["wireless earbuds", "trail running shoes great"], padding=True, return_tensors="pt")
    assert batch["input_ids"][1].tolist()[1:4] == [
        tok2.convert_tokens_to_ids(w) for w in ("trail", "running", "shoes")
    ]
    model.eval()
    model2.eval()
    with torch.no_grad():
        a = model(**batch).last_hidden_state
        b = model2(**batch).last_hidden_state
    assert a.shape == (2, batch["input_ids"].shape[1], 32)
    torch.testing.assert_close(a, b)


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        load_encoder(tmp_path / "nothing")


@pytest.mark.slow
def test_demo_model_ships_in_a_package_and_embeds_offline() -> None:
    tokenizer, model = load_encoder(packaged_model_dir())
    batch = tokenizer(
        ["noise-cancelling headphones", "over-ear headphones", "cast iron skillet"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert emb.shape == (3, 384)
    # a real pretrained model: the two headphones are closer to each other than to the skillet
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.1
