"""Text → vector with a pretrained sentence encoder, inside Spark tasks.

The model is loaded once per Python worker (a module-level cache keyed by path), from a local
directory only. Pooling is the mean of token states under the attention mask, then the tower's
projection and L2 normalisation (``shoprec.modeling.towers``): for a plain pretrained encoder the
projection is the identity, which is what all-MiniLM-L6-v2 was trained with, so zero-shot
cosines are meaningful.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from shoprec.config import EncoderConfig
from shoprec.modeling.pretrained import packaged_model_dir

log = logging.getLogger(__name__)
#: Per process, by model directory: (tokenizer, model, metadata).
_MODELS: dict[str, tuple[Any, Any, dict[str, Any]]] = {}


def model_dir(cfg: EncoderConfig) -> Path:
    """The configured model directory, or the packaged all-MiniLM-L6-v2."""
    return Path(cfg.model_path) if cfg.model_path else packaged_model_dir()


def _cached(path: str) -> tuple[Any, Any, dict[str, Any]]:
    """The model at ``path`` with its metadata, loaded once per process (every Spark task of an
    executor embeds with the same one)."""
    if path not in _MODELS:
        from shoprec.modeling.towers import load

        _MODELS[path] = load(path)
    return _MODELS[path]


#: How a tower's vectors are computed outside training; part of training's fingerprint
#: (:mod:`shoprec.training.reuse`), so a change re-fits the rankers fitted on such vectors.
#: 2: each tower of a fine-tuned model reads at most the tokens it was trained on.
VECTORS = 2


def tower_width(path: str, tower: str, default: int) -> int:
    """The tokens ``tower`` of the model at ``path`` reads: the width it was fine-tuned at
    (``user_max_length``/``item_max_length`` in its metadata), else ``default`` (a plain
    pretrained encoder). Reading more than training showed is a train/serve skew: on Office's
    validation split the fine-tuned two-tower ranked better at its training widths (96 user and
    64 item tokens: R@10 .0718, N@10 .0391) than at 128 for both (.0681, .0381); fewer tokens
    are also faster to encode."""
    width = _cached(path)[2].get(f"{tower}_max_length")
    return int(width) if width else default


def encode(
    texts: list[str], path: str, max_length: int, batch_size: int, tower: str = "item"
) -> NDArray[Any]:
    """Embed ``texts`` (in order) with one tower of the model at ``path``: one unit vector each.

    A plain pretrained encoder directory works too: its towers are the identity, i.e. the mean-
    pooled, normalised sentence embedding.
    """
    import torch

    tokenizer, model, _ = _cached(path)
    embed_fn = model.users if tower == "user" else model.items
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out.append(embed_fn(batch["input_ids"], batch["attention_mask"]).float().numpy())
    width = int(model.encoder.config.hidden_size)
    return np.concatenate(out) if out else np.zeros((0, width), dtype=np.float32)


def embed(
    df: DataFrame, key: str, text: str, cfg: EncoderConfig, tower: str = "item", path: str | None = None
) -> DataFrame:
    """``(key, vector)`` for every row of ``df``, encoded in the Spark tasks that hold the rows,
    each text cut at :func:`tower_width`."""
    path = path or str(model_dir(cfg))
    _cached(path)  # fail here, on the driver, with a clear message if the model is missing
    schema = StructType(
        [StructField(key, StringType(), False), StructField("vector", ArrayType(FloatType(), False), False)]
    )
    max_length, batch_size, threads = tower_width(path, tower, cfg.max_length), cfg.batch_size, cfg.threads

    def run(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        import torch

        torch.set_num_threads(threads)
        for pdf in batches:
            texts = pdf[text].fillna("").astype(str).tolist()
            vectors = encode(texts, path, max_length, batch_size, tower)
            yield pd.DataFrame({key: pdf[key].to_numpy(), "vector": list(vectors)})

    # text is small in bytes but heavy to encode: spread it over every core explicitly (adaptive
    # execution would otherwise coalesce a few thousand short strings into one task)
    # Hash-partitioned and sorted by key: each text meets the same batch neighbours on every run, so
    # padding and batched kernels give bit-identical vectors (a re-run reproduces its top-K exactly).
    tasks = 2 * df.sparkSession.sparkContext.defaultParallelism
    return df.select(key, text).repartition(tasks, key).sortWithinPartitions(key).mapInPandas(run, schema)
