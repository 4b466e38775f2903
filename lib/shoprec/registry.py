"""The MLflow model registry: training registers every model, scoring loads one by name and alias.

``shoprec train`` registers its model directory (retriever, tokenizer, ranker) as a new version
of ``training.registered_model``; the first version ever registered becomes the ``champion``.
``shoprec score`` loads ``models:/<name>@champion`` unless ``scoring.model_uri`` or
``scoring.model_path`` says otherwise. ``shoprec promote`` moves the alias to a newer version
only when it beats the champion on ``training.promote_metric``, measured on both versions at once
(the lists each would serve, on the validation split's held-out users), so a scheduled pipeline
never serves a model that measured worse.

The registry lives wherever the tracking URI points: a SQLite database under ``paths.root`` by
default, Databricks' or a team's MLflow server on clusters.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from shoprec.config import ShoprecConfig
from shoprec.errors import ShoprecError

log = logging.getLogger(__name__)

CHAMPION = "champion"
_LATEST = "latest"
#: What MLflow accepts as an alias name.
_ALIAS = re.compile(r"[\w-]{1,255}")
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))")


def tracking_uri(cfg: ShoprecConfig) -> str:
    """The configured MLflow tracking URI, else a SQLite database under ``paths.root``."""
    return cfg.training.tracking_uri or f"sqlite:///{Path(cfg.path('root'), 'mlflow.db').resolve()}"


def client(cfg: ShoprecConfig) -> Any:
    """An MLflow client whose registry is the tracking store (one database for runs and models)."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_uri(cfg: ShoprecConfig) -> str:
    """What scoring loads: ``scoring.model_uri``, else the registered model's champion."""
    return cfg.scoring.model_uri or f"models:/{cfg.training.registered_model}@{CHAMPION}"


def _missing(exc: Exception) -> bool:
    """Whether MLflow said the registered model (or version) does not exist: by its error code, the
    same from a local store and a REST server, never by the wording of its message."""
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    return bool(getattr(exc, "error_code", None) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST))


def register(cfg: ShoprecConfig, run_id: str, artifact_path: str = "model") -> Any:
    """Register run ``run_id``'s ``artifact_path`` as a new version; the first becomes champion."""
    from mlflow.exceptions import MlflowException

    c = client(cfg)
    name = cfg.training.registered_model
    try:
        c.get_registered_model(name)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        c.create_registered_model(
            name, description="shoprec: fine-tuned retriever, its tokenizer and the ranking head"
        )
    source = f"{c.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = c.create_model_version(name, source, run_id=run_id)
    champion = _by_alias(c, name, CHAMPION)
    if champion is None:
        c.set_registered_model_alias(name, CHAMPION, version.version)
        log.info("registered %s version %s: the first version, now @%s", name, version.version, CHAMPION)
    else:
        log.info(
            "registered %s version %s (@%s stays on version %s until `shoprec promote`)",
            name,
            version.version,
            CHAMPION,
            champion.version,
        )
    return version


def _by_alias(c: Any, name: str, alias: str) -> Any | None:
    """The version ``alias`` points at; ``None`` when the model or the alias does not exist. Read from
    the registered model's alias map: MLflow reports a missing alias and a malformed one alike
    (INVALID_PARAMETER_VALUE), and a malformed one is the user's mistake to hear about."""
    from mlflow.exceptions import MlflowException

    if not _ALIAS.fullmatch(alias):
        raise ShoprecError(
            f"registered model alias {alias!r}: an alias is 1 to 255 letters, digits, _ or -; "
            "fix the alias in scoring.model_uri (e.g. models:/shoprec-ranker@champion)"
        )
    try:
        model = c.get_registered_model(name)
        if alias.lower() == _LATEST:  # MLflow's reserved alias: the newest version
            versions = c.search_model_versions(f"name = '{name}'")
            return max(versions, key=lambda v: int(v.version)) if versions else None
        version = model.aliases.get(alias)
        return c.get_model_version(name, version) if version is not None else None
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def _local_dir(cfg: ShoprecConfig, name: str, version: str, source: str) -> Path:
    """A local directory holding the version's files: the artifact store itself when it is local,
    else a download cached under ``paths.models``/registry."""
    parsed = urlparse(source)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    import mlflow.artifacts

    target = Path(cfg.path("models"), "registry", name, version)
    if not target.is_dir():
        log.info("downloading %s version %s from %s", name, version, source)
        mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(target), tracking_uri=tracking_uri(cfg)
        )
    return target


def resolve(cfg: ShoprecConfig, uri: str | None = None) -> tuple[Path, str]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` → (local model directory, version label)."""
    from mlflow.exceptions import MlflowException

    uri = uri or model_uri(cfg)
    m = _URI.fullmatch(uri)
    if not m:
        raise ShoprecError(
            f"scoring.model_uri {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION, "
            "e.g. models:/shoprec-ranker@champion"
        )
    name, alias, number = m.group("name"), m.group("alias"), m.group("version")
    c = client(cfg)
    try:
        mv = _by_alias(c, name, alias) if alias else c.get_model_version(name, number)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        mv = None
    if mv is None:
        raise ShoprecError(
            f"no model at {uri} in the registry at {tracking_uri(cfg)}: run `shoprec train` (it "
            f"registers {name}), or `shoprec promote --version N` to name a champion"
        )
    path = _version_dir(cfg, c, name, mv)
    return path, f"{name}-v{mv.version}"


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    metric: str
    value: float | None
    champion: str | None  # the version that was champion before
    champion_value: float | None
    promoted: bool

    def describe(self) -> str:
        if self.champion == self.version:
            return f"{self.name} version {self.version} is already @champion"
        if self.champion is None:
            was = "there was no champion"
        elif self.champion_value is None:
            was = f"champion version {self.champion} has no {self.metric}"
        else:
            was = f"champion version {self.champion} has {self.metric} = {self.champion_value:.4f}"
        verdict = "now @champion" if self.promoted else "not promoted (the champion stays)"
        own = f"{self.value:.4f}" if self.value is not None else "missing"
        return f"{self.name} version {self.version}: {self.metric} = {own}; {was}: {verdict}"


def _metric(c: Any, mv: Any, metric: str) -> float | None:
    value = c.get_run(mv.run_id).data.metrics.get(metric) if mv.run_id else None
    return float(value) if value is not None else None


def promote(
    cfg: ShoprecConfig,
    version: str | None = None,
    force: bool = False,
    measure: Callable[[Path], float] | None = None,
) -> Promotion:
    """Move ``@champion`` to ``version`` (default: the newest) if it beats the champion.

    With ``measure`` (a model directory → ``training.promote_metric``, e.g. the validation NDCG@10
    of the lists it would serve), both versions are measured now, on the same data, and the
    candidate's value is logged to its MLflow run; without it, the values their runs logged are
    compared. A champion that cannot be measured (a model an older shoprec wrote) is replaced."""
    from mlflow.exceptions import MlflowException

    c = client(cfg)
    name, metric = cfg.training.registered_model, cfg.training.promote_metric
    try:
        versions = c.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if not _missing(exc):
            raise
        versions = []
    if not versions:
        raise ShoprecError(
            f"no versions of {name} in the registry at {tracking_uri(cfg)}: run `shoprec train`"
        )
    by_number = {str(v.version): v for v in versions}
    chosen = version or max(by_number, key=int)
    if chosen not in by_number:
        raise ShoprecError(f"{name} has no version {chosen} (have: {', '.join(sorted(by_number, key=int))})")
    candidate = by_number[chosen]
    champion = _by_alias(c, name, CHAMPION)
    if champion is not None and str(champion.version) == chosen:
        log.info("%s version %s is already @%s", name, chosen, CHAMPION)
        return Promotion(name, chosen, metric, None, chosen, None, False)
    if force:
        value, champion_value = None, None
    elif measure is not None:
        value = measure(_version_dir(cfg, c, name, candidate))
        if candidate.run_id:
            c.log_metric(candidate.run_id, metric, value)
        champion_value = None
        if champion is not None:
            try:
                champion_value = measure(_version_dir(cfg, c, name, champion))
            except ShoprecError as exc:
                log.warning(
                    "champion version %s cannot be measured (%s): it is replaced", champion.version, exc
                )
    else:
        value = _metric(c, candidate, metric)
        if value is None:
            raise ShoprecError(
                f"{name} version {chosen} has no metric {metric} in its MLflow run {candidate.run_id}: "
                "promote it with `shoprec promote` (it measures both versions), or pass --force"
            )
        champion_value = _metric(c, champion, metric) if champion is not None else None
    beats = champion is None or champion_value is None or (value is not None and value > champion_value)
    promoted = force or beats
    if promoted:
        c.set_registered_model_alias(name, CHAMPION, chosen)
    result = Promotion(
        name,
        chosen,
        metric,
        value,
        str(champion.version) if champion is not None else None,
        champion_value,
        promoted,
    )
    log.info(result.describe())
    return result


def _version_dir(cfg: ShoprecConfig, c: Any, name: str, mv: Any) -> Path:
    return _local_dir(cfg, name, str(mv.version), c.get_model_version_download_uri(name, mv.version))
