"""transformers: a tiny BERT built here, saved, and reloaded from its local path with the hub off."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import SparkSession

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


def test_a_fine_tuned_towers_vectors_read_only_the_tokens_each_tower_was_trained_on(
    spark: SparkSession, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Serving a tower more tokens than training showed it is a train/serve skew: ``embed`` cuts
    each text at the tower's training width, and a plain pretrained encoder at the configured one."""
    from shoprec.config import EncoderConfig
    from shoprec.modeling import encoder
    from shoprec.modeling import towers as tt

    tokenizer, bert = load_encoder(tiny_model_dir)
    saved = tmp_path / "tuned"
    tt.save(tt.TwoTower(bert).eval(), tokenizer, saved, {"user_max_length": 12, "item_max_length": 8})
    long = " ".join(["sock", "shoe", "boot", "lamp", "desk", "pen"] * 6)
    rows = spark.createDataFrame([("u", long)], "id string, text string")
    cfg = EncoderConfig(max_length=128)
    for tower, width in (("user", 12), ("item", 8)):
        assert encoder.tower_width(str(saved), tower, 128) == width
        got = np.asarray(encoder.embed(rows, "id", "text", cfg, tower, str(saved)).first()["vector"])
        cut = encoder.encode([long], str(saved), width, 4, tower)[0]
        whole = encoder.encode([long], str(saved), 128, 4, tower)[0]
        np.testing.assert_allclose(got, cut, atol=1e-5)
        assert np.abs(whole - cut).max() > 1e-3  # the cut changes the vector: the test can tell
    assert encoder.tower_width(str(tiny_model_dir), "user", 128) == 128
