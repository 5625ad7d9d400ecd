"""Register an export in the MLflow Model Registry as a self-contained pyfunc.

``register_export`` logs the export folder as an MLflow pyfunc ("models from code":
``deploy/pyfunc_model.py``), registers a new version of ``model_name``, tags the version
(dataset, kimg, family, resolution, metrics) and sets an alias (``champion`` or any name;
stages are deprecated in MLflow and never used).

The model needs no ganforge on the client: the network code (``training/networks``) and
``deploy/sampling.py`` are copied into a vendored package ``ganforge_pyfunc_<hash>`` shipped
through ``code_paths``; the hash of the code names it, so two models built from different code
can live in one process. Weights stay safetensors + JSON; no pickle is written or read.

Loading the model with MLflow (``mlflow.pyfunc.load_model``, ``mlflow models serve``) executes
that stored Python (``pyfunc_model.py`` and the vendored package): whoever can write to the
artifact store can run code there. The version tag ``code_sha256`` (``code_digest``) records
what was registered and ``verify_model_code`` checks it; ``deploy.generator.load_generator``
and ``ganforge generate/serve`` read only the JSON + safetensors and execute nothing stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import training.networks as networks_package
from training.networks.export import (
    CONFIG_NAME,
    TRANSLATOR_CONFIG_NAME,
    WEIGHTS_NAME,
    ExportError,
    export_kind,
    lower_is_better,
    read_export_config,
    read_translator_config,
)

from . import sampling as sampling_module
from .resolve import EXPORT_ARTIFACT_KEY, MODEL_ARTIFACT_NAME, mlflow_uri

PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")
# translators (kind: translator, e.g. CycleGAN): images in, images out
TRANSLATOR_PYFUNC_FILE = Path(__file__).with_name("translator_pyfunc.py")
DEFAULT_EXPERIMENT = "ganforge"
PIP_REQUIREMENTS = ["torch", "safetensors", "numpy"]
METRIC_TAG_PREFIX = "metric."


class RegistryError(ValueError):
    """A registration request that cannot be satisfied; the message says what to change."""


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    """Registered model name."""
    version: str
    """The new version number (as MLflow returns it: a string)."""
    uri: str
    """``models:/NAME/VERSION``."""
    run_id: str
    """The MLflow run the model was logged in."""
    model_uri: str
    """Where the logged model lives (``models:/m-...``)."""
    alias: str | None = None
    """The alias that now points at this version (None: not set / not promoted)."""
    promoted: bool = False
    """True when the alias was moved to this version."""


def vendor_code(dst: str | Path) -> Path:
    """Copy training/networks + deploy/sampling.py into ``dst/ganforge_pyfunc_<hash>/``.

    Absolute ``training.networks`` references (the family table) are rewritten to the vendored
    package name; everything else uses relative imports and is copied verbatim.
    """
    net_dir = Path(networks_package.__file__).parent
    sources = {f"networks/{p.name}": p.read_text() for p in sorted(net_dir.glob("*.py"))}
    sources["sampling.py"] = Path(sampling_module.__file__).read_text()
    digest = hashlib.sha256(
        "".join(f"{k}\0{v}\0" for k, v in sorted(sources.items())).encode()
    ).hexdigest()[:10]
    package = f"ganforge_pyfunc_{digest}"
    root = Path(dst) / package
    (root / "networks").mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text(
        '"""Vendored ganforge generator code shipped with an MLflow model."""\n'
    )
    for rel, text in sources.items():
        (root / rel).write_text(re.sub(r"\btraining\.networks\b", f"{package}.networks", text))
    return root


def code_digest(model_dir: str | Path) -> str:
    """sha256 of the Python a pyfunc model executes when MLflow loads it: the model file
    (``pyfunc_model.py``) and the vendored package under ``code/``. Registration records it as
    the version tag ``code_sha256``; ``verify_model_code`` recomputes it from the store."""
    root = Path(model_dir)
    files = sorted([*root.glob("*.py"), *root.glob("code/**/*.py")])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def verify_model_code(model_uri: str, tracking_uri: str | None = None) -> str:
    """Download ``models:/NAME/VERSION`` (or ``@ALIAS``) afresh and check that the Python it
    would execute still hashes to the version's ``code_sha256`` tag; -> the digest.
    RegistryError when it differs (the stored code was changed after registration)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    if m is None:
        raise RegistryError(f"{model_uri}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    name, alias, version = m.groups()
    with mlflow_uri(tracking_uri), tempfile.TemporaryDirectory(prefix="ganforge-verify-") as tmp:
        uri = mlflow.get_tracking_uri()
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mv = client.get_model_version_by_alias(name, alias) if alias else None
        mv = mv or client.get_model_version(name, version)
        expected = (mv.tags or {}).get("code_sha256")
        if not expected:
            raise RegistryError(f"{model_uri}: version {mv.version} has no code_sha256 tag")
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{mv.version}",
            dst_path=tmp,
            tracking_uri=uri,
            registry_uri=uri,
        )
        actual = code_digest(local)
    if actual != expected:
        raise RegistryError(
            f"{model_uri}: the model's Python code changed since registration (code_sha256 "
            f"{actual[:12]}... != tag {expected[:12]}...); do not load it as a pyfunc"
        )
    return actual


def signature_for(config: dict[str, Any]):
    """Inputs: seed | latent, optional label; params psi, noise_mode; output uint8 [N, H, W, C].
    Translators: no input schema (an 'image' column of bytes/base64 or a uint8 array, checked by
    the model); params direction, size; output uint8 [N, H, W, C] of any size."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    if config.get("kind") == "translator":
        ch = int(config["channels"])
        return ModelSignature(
            inputs=None,
            outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, ch), name="images")]),
            params=ParamSchema(
                [
                    ParamSpec("direction", "string", config["directions"][0]),
                    ParamSpec("size", "string", "auto"),
                ]
            ),
        )

    inputs = Schema(
        [
            ColSpec("long", "seed", required=False),
            ColSpec(Array("double"), "latent", required=False),
            ColSpec("long", "label", required=False),
        ]
    )
    res, ch = int(config["resolution"]), int(config["channels"])
    outputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, res, res, ch), name="images")])
    params = ParamSchema(
        [ParamSpec("psi", "double", 1.0), ParamSpec("noise_mode", "string", "const")]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def version_tags(config: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, str]:
    """dataset, kimg, family, resolution, classes and ``metric.<name>`` from the export config."""
    meta = config.get("meta") or {}
    tags: dict[str, Any] = {
        "family": config["family"],
        "resolution": config["resolution"],
        "channels": config["channels"],
        "c_dim": config.get("c_dim", 0),
    }
    if config.get("kind") == "translator":
        tags["kind"] = "translator"
        tags["directions"] = ",".join(config["directions"])
    for key in ("dataset", "dataset_sha256", "kimg", "run_name"):
        if meta.get(key) is not None:
            tags[key] = meta[key]
    if config.get("class_names"):
        tags["class_names"] = ",".join(config["class_names"])
    for name, value in (meta.get("metrics") or {}).items():
        tags[f"{METRIC_TAG_PREFIX}{name}"] = value
    tags.update(extra or {})
    return {k: str(v)[:5000] for k, v in tags.items()}


def _metric_of(tags: dict[str, str], metric: str) -> float | None:
    value = tags.get(f"{METRIC_TAG_PREFIX}{metric}")
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        # Local stores keep artifacts next to the database (<work_dir>/mlartifacts), not in ./mlruns.
        location = (
            Path(tracking_uri[len("sqlite:///") :]).resolve().parent / "mlartifacts"
        ).as_uri()
    return client.create_experiment(name, artifact_location=location)


def register_export(
    export_dir: str | Path,
    *,
    model_name: str,
    alias: str | None = None,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    promote_if_better: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> ModelVersionInfo:
    """Log ``export_dir`` as a pyfunc (in run ``run_id``, else a new run), register a new version.

    ``alias``: set on the new version (moved from any older one). With ``promote_if_better``
    (a metric name in ``meta["metrics"]``), the alias moves only when the new version beats the
    current holder (lower is better for names containing fid/kid/distance/_fd, else higher); a
    holder without the metric is always beaten, a new version without it never wins.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    export_dir = Path(export_dir)
    translator = export_kind(export_dir) == "translator"
    config = read_translator_config(export_dir) if translator else read_export_config(export_dir)
    if not (export_dir / WEIGHTS_NAME).is_file():
        raise ExportError(f"{export_dir}: missing {WEIGHTS_NAME}")
    if not model_name or "/" in model_name or "@" in model_name:
        raise RegistryError(f"model_name: {model_name!r} must be non-empty without '/' or '@'")
    if promote_if_better and not alias:
        raise RegistryError("promote_if_better needs an alias to promote (e.g. alias='champion')")
    if alias is not None and (
        not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", alias) or alias.lower() == "latest"
    ):
        raise RegistryError(
            f"alias: {alias!r} must start with a letter/underscore, contain only letters, "
            f"digits, '_' or '-', and not be 'latest'"
        )
    new_tags = version_tags(config, tags)
    if promote_if_better and _metric_of(new_tags, promote_if_better) is None:
        known = sorted((config.get("meta") or {}).get("metrics") or {})
        print(
            f"ganforge: the export has no metric {promote_if_better!r} (has: {', '.join(known) or 'none'}); "
            f"registering without moving alias {alias!r}",
            file=sys.stderr,
        )

    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    with mlflow_uri(tracking_uri), tempfile.TemporaryDirectory(prefix="ganforge-pyfunc-") as tmp:
        uri = mlflow.get_tracking_uri()
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        code_dir = vendor_code(Path(tmp) / "model" / "code")
        shutil.copy2(PYFUNC_MODEL_FILE, Path(tmp) / "model" / PYFUNC_MODEL_FILE.name)
        new_tags["code_sha256"] = code_digest(Path(tmp) / "model")  # what loading will execute
        # Staged under the name "export" so the model holds it at artifacts/export whatever the
        # source folder is called (deploy.generator.find_export_dir looks there).
        staged = Path(tmp) / EXPORT_ARTIFACT_KEY
        staged.mkdir()
        for name in (TRANSLATOR_CONFIG_NAME if translator else CONFIG_NAME, WEIGHTS_NAME):
            shutil.copy2(export_dir / name, staged / name)
        active = mlflow.active_run()  # a caller using MLflow's fluent API may have one open
        previous_status = None
        if active is not None and run_id == active.info.run_id:
            run = contextlib.nullcontext(active)  # log into it, leave it open
        elif run_id is not None:
            previous_status = client.get_run(run_id).info.status
            run = mlflow.start_run(run_id=run_id, nested=active is not None)
        else:
            run = mlflow.start_run(
                experiment_id=_experiment_id(client, experiment, uri),
                run_name=f"register-{model_name}",
                nested=active is not None,
            )
        with run as current:
            with warnings.catch_warnings():
                # MLflow nags about predict() type hints and a missing input example; the explicit
                # signature below is the contract, and an example would run the model at log time.
                warnings.filterwarnings("ignore", message=".*(type hint|input example).*")
                model_info = _log_pyfunc(mlflow, staged, code_dir, config, model_name)
            mlflow.set_tags(
                {
                    f"ganforge.{k}": v
                    for k, v in new_tags.items()
                    if not k.startswith(METRIC_TAG_PREFIX)
                }
            )
            active_run_id = current.info.run_id
        if previous_status == "RUNNING":
            # start_run(run_id=...) ends the run on exit; the caller's run is still going.
            client.update_run(run_id, status="RUNNING")
        version = str(model_info.registered_model_version)
        for key, value in new_tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        promoted = False
        if alias:
            promoted = _should_promote(client, model_name, alias, new_tags, promote_if_better)
            if promoted:
                client.set_registered_model_alias(model_name, alias, version)
    return ModelVersionInfo(
        name=model_name,
        version=version,
        uri=f"models:/{model_name}/{version}",
        run_id=active_run_id,
        model_uri=model_info.model_uri,
        alias=alias if promoted else None,
        promoted=promoted,
    )


def _log_pyfunc(
    mlflow: Any, staged: Path, code_dir: Path, config: dict[str, Any], model_name: str
) -> Any:
    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT_NAME,
        python_model=str(
            TRANSLATOR_PYFUNC_FILE if config.get("kind") == "translator" else PYFUNC_MODEL_FILE
        ),
        artifacts={EXPORT_ARTIFACT_KEY: str(staged)},
        code_paths=[str(code_dir)],
        model_config={"code_package": code_dir.name},
        signature=signature_for(config),
        pip_requirements=PIP_REQUIREMENTS,
        registered_model_name=model_name,
    )


def _should_promote(
    client: Any, model_name: str, alias: str, new_tags: dict[str, str], metric: str | None
) -> bool:
    from mlflow.exceptions import MlflowException

    if not metric:
        return True
    new_value = _metric_of(new_tags, metric)
    if new_value is None:
        return False
    try:
        holder = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return True  # nobody holds the alias yet
    old_value = _metric_of(holder.tags or {}, metric)
    if old_value is None:
        return True
    return new_value < old_value if lower_is_better(metric) else new_value > old_value


def set_alias(
    model_name: str, alias: str, version: str | int, tracking_uri: str | None = None
) -> None:
    """Point ``alias`` at ``version`` (e.g. to roll back ``champion``)."""
    from mlflow.tracking import MlflowClient

    with mlflow_uri(tracking_uri):
        import mlflow

        uri = mlflow.get_tracking_uri()
        MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
            model_name, alias, str(version)
        )
