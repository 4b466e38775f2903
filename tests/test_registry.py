"""The model registry's alias lookup on a real (SQLite) MLflow registry: no Spark, no training."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoprec import registry
from shoprec.config import ShoprecConfig, from_dict
from shoprec.errors import ShoprecError


@pytest.fixture()
def cfg(tmp_path: Path) -> ShoprecConfig:
    return from_dict({"paths": {"root": str(tmp_path)}, "training": {"registered_model": "reg-test"}})


def _registered(cfg: ShoprecConfig, tmp_path: Path) -> str:
    """A version registered from a run holding a one-file model; returns its version number."""
    c = registry.client(cfg)
    artifacts = (tmp_path / "mlartifacts").as_uri()  # not ./mlruns in the working directory
    run = c.create_run(c.create_experiment("registry-test", artifact_location=artifacts)).info.run_id
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.txt").write_text("w")
    c.log_artifacts(run, str(tmp_path / "model"), "model")
    return str(registry.register(cfg, run).version)


def test_aliases_resolve_from_the_alias_map_and_a_malformed_alias_is_the_users_error(
    cfg: ShoprecConfig, tmp_path: Path
) -> None:
    c = registry.client(cfg)
    assert registry._by_alias(c, "reg-test", registry.CHAMPION) is None  # no registered model yet
    version = _registered(cfg, tmp_path)
    champion, latest = (registry._by_alias(c, "reg-test", a) for a in (registry.CHAMPION, "latest"))
    assert champion is not None and str(champion.version) == version
    assert latest is not None and str(latest.version) == version
    assert registry._by_alias(c, "reg-test", "staging") is None  # a well-formed alias nobody set
    # MLflow answers a malformed alias as it does a missing one; it used to read as "no model"
    with pytest.raises(ShoprecError, match=r"^registered model alias 'bad alias!': .*scoring\.model_uri"):
        registry._by_alias(c, "reg-test", "bad alias!")
    path, label = registry.resolve(cfg)
    assert label == f"reg-test-v{version}" and (path / "weights.txt").read_text() == "w"
    with pytest.raises(ShoprecError, match=r"^no model at models:/reg-test@staging in the registry"):
        registry.resolve(cfg, "models:/reg-test@staging")
    with pytest.raises(ShoprecError, match=r"^no model at models:/reg-test/99 in the registry"):
        registry.resolve(cfg, "models:/reg-test/99")
    with pytest.raises(ShoprecError, match=r"^no model at models:/nobody@champion"):
        registry.resolve(cfg, "models:/nobody@champion")
