"""Resolve a model reference to a local export folder (``generator.json`` + ``weights.safetensors``).

References: a local export folder, a downloaded MLflow model folder, ``models:/NAME@ALIAS``,
``models:/NAME/VERSION``, ``runs:/RUN_ID/generator`` or a bare run id. Remote models are
downloaded once into a cache (``cache_root()``, one folder per registry version or run artifact,
named by the version and a hash of the store), so repeated loads neither download again nor
leave copies in the temp folder; moving an alias to a new version downloads that version. Only
JSON and safetensors are read from the folder; no file of the artifact is imported or executed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.networks.export import (
    CONFIG_NAME,
    TRANSLATOR_CONFIG_NAME,
    ExportError,
    make_temp_dir,
)

MODEL_ARTIFACT_NAME = "generator"
"""Name the pyfunc is logged under inside a run (``runs:/RUN_ID/generator``)."""
EXPORT_ARTIFACT_KEY = "export"
"""Key of the export folder in the pyfunc's artifacts (``<model>/artifacts/export``)."""
CACHE_ENV = "GANFORGE_CACHE_DIR"
"""Environment variable naming the model cache folder."""
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")  # models:/, runs:/, s3://, ... (not C:\\)


@contextlib.contextmanager
def mlflow_uri(tracking_uri: str | None) -> Iterator[None]:
    """Point MLflow (tracking + registry) at ``tracking_uri`` for the block, then restore.

    Restores what was *set* (module globals and env vars), not the resolved values, so a caller
    who never set a URI keeps MLflow's defaults (the registry follows the tracking URI).
    """
    import mlflow
    from mlflow.tracking import _tracking_service
    from mlflow.tracking._model_registry import utils as registry_utils

    if tracking_uri is None:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_tracking = getattr(_tracking_service.utils, "_tracking_uri", None)
    saved_registry = getattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        _tracking_service.utils._tracking_uri = saved_tracking
        registry_utils._registry_uri = saved_registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def find_export_dir(folder: str | Path) -> Path | None:
    """The export folder inside an export / MLflow model folder, or None."""
    folder = Path(folder)
    for candidate in (folder, folder / "artifacts" / EXPORT_ARTIFACT_KEY):
        if (candidate / CONFIG_NAME).is_file() or (candidate / TRANSLATOR_CONFIG_NAME).is_file():
            return candidate
    return None


def model_uri_of(reference: str) -> str:
    """A bare run id becomes ``runs:/RUN_ID/generator``; MLflow URIs pass through."""
    if _RUN_ID.fullmatch(reference):
        return f"runs:/{reference}/{MODEL_ARTIFACT_NAME}"
    return reference


def resolve_export(
    reference: str | Path, tracking_uri: str | None = None, dst_dir: str | Path | None = None
) -> Path:
    """A local export/model folder, ``models:/...``, ``runs:/...`` or a run id -> local export folder."""
    ref = str(reference)
    if not _URI.match(ref) or Path(ref).exists():
        path = Path(ref)
        if not path.exists():
            if _RUN_ID.fullmatch(ref):
                return _download(model_uri_of(ref), tracking_uri, dst_dir)
            raise FileNotFoundError(
                f"{ref}: no such folder; give an export folder (with {CONFIG_NAME}), "
                f"an MLflow model folder, models:/NAME@ALIAS, runs:/RUN_ID/generator or a run id"
            )
        found = find_export_dir(path)
        if found is None:
            raise ExportError(
                f"{ref}: neither a ganforge export folder ({CONFIG_NAME} + weights.safetensors) "
                f"nor an MLflow model folder logged by `ganforge register`"
            )
        return found
    return _download(ref, tracking_uri, dst_dir)


def cache_root() -> Path:
    """Where downloaded models live: ``$GANFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ganforge/models``
    (``~/.cache/ganforge/models``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ganforge" / "models"


def _cache_key(uri: str, tracking_uri: str) -> tuple[str, bool]:
    """-> (folder name, immutable). A registry version or a run's artifact never changes, so
    its copy is reused; any other URI gets one folder that each load refreshes."""
    from mlflow.tracking import MlflowClient

    parts: tuple[str, ...]
    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    immutable = True
    if m:
        name, alias, version = m.groups()
        if alias is not None:
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            version = client.get_model_version_by_alias(name, alias).version
        parts, label = ("models", name, str(version)), f"{name}-v{version}"
    elif m := re.fullmatch(r"runs:/([0-9a-f]{32})/(.+)", uri):
        parts, label = ("runs", *m.groups()), f"run-{m.group(1)[:8]}"
    elif m := re.fullmatch(r"models:/(m-[0-9a-f]+)", uri):
        parts, label = ("logged", m.group(1)), m.group(1)[:14]
    else:
        parts, label, immutable = ("uri", uri), "uri", False
    digest = hashlib.sha256("\0".join((tracking_uri, *parts)).encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)[:60]}-{digest}", immutable


def _download(uri: str, tracking_uri: str | None, dst_dir: str | Path | None) -> Path:
    """Download ``uri`` into ``dst_dir``, or into the model cache (one folder per model version,
    filled through a temporary folder renamed into place, so it is complete or absent)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with mlflow_uri(tracking_uri):
            store = mlflow.get_tracking_uri()
            if dst_dir is not None:
                local = _fetch(mlflow, uri, Path(dst_dir))
            else:
                local = _cached(mlflow, uri, store)
    except MlflowException as exc:
        where = tracking_uri or mlflow.get_tracking_uri()
        raise FileNotFoundError(
            f"{uri}: cannot be loaded from the MLflow store at {where} "
            f"({str(exc).splitlines()[0]}); check the name/alias/version with "
            f"`mlflow models` or the UI, and --tracking-uri"
        ) from None
    found = find_export_dir(local)
    if found is None:
        raise ExportError(
            f"{uri}: the MLflow model has no ganforge export under artifacts/{EXPORT_ARTIFACT_KEY}; "
            f"was it logged by `ganforge register`?"
        )
    return found


def _fetch(mlflow: Any, uri: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri,
            dst_path=str(dst),
            tracking_uri=mlflow.get_tracking_uri(),
            registry_uri=mlflow.get_registry_uri(),
        )
    )


def _cached(mlflow: Any, uri: str, store: str) -> Path:
    root = cache_root()
    key, immutable = _cache_key(uri, store)
    entry = root / key
    marker = entry / ".ganforge-source"  # the path of the model inside the entry
    if immutable and marker.is_file():
        return entry / marker.read_text()
    _remove_stale(root)
    tmp = make_temp_dir(root, f".tmp-{key}-")
    try:
        local = _fetch(mlflow, uri, tmp)
        (tmp / marker.name).write_text(str(local.relative_to(tmp)))
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(tmp, entry)
        except OSError:  # another process filled the entry first: use theirs
            if not marker.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry / marker.read_text()


def _remove_stale(root: Path, max_age_s: float = 86400.0) -> None:
    """Temporary folders of downloads killed half-way (older than a day)."""
    now = time.time()
    for stale in root.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
