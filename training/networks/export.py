"""The export contract: ``generator.json`` + ``weights.safetensors`` of G_ema.

The only artifact that leaves a run. ``deploy/`` and the MLflow pyfunc rebuild the generator from
the JSON (family + constructor kwargs) and load the weights with ``strict=True``; no pickles, no
code inside the artifact. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import build_generator

FORMAT = "ganforge-generator"
FORMAT_VERSION = 1
CONFIG_NAME = "generator.json"
WEIGHTS_NAME = "weights.safetensors"


class ExportError(ValueError):
    """The folder is not a valid ganforge export; the message says what is wrong."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_export(
    out_dir: str | Path,
    generator: torch.nn.Module,
    *,
    family: str,
    kwargs: dict[str, Any],
    class_names: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write G (the unwrapped, uncompiled module) as an export folder; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in generator.state_dict().items()
    }
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{WEIGHTS_NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        os.replace(tmp, out / WEIGHTS_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family,
        "kwargs": kwargs,
        "z_dim": int(generator.z_dim),
        "c_dim": int(generator.c_dim),
        "resolution": int(generator.img_resolution),
        "channels": int(generator.img_channels),
        "class_names": list(class_names or []),
        "meta": dict(meta or {}),
    }
    _atomic_write_bytes(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True).encode())
    return out


def read_export_config(export_dir: str | Path) -> dict[str, Any]:
    path = Path(export_dir) / CONFIG_NAME
    if not path.is_file():
        raise ExportError(
            f"{export_dir}: no {CONFIG_NAME}; expected a ganforge export folder "
            f"({CONFIG_NAME} + {WEIGHTS_NAME}) as written by `ganforge train`"
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None
    if config.get("format") != FORMAT:
        raise ExportError(f"{path}: format is {config.get('format')!r}, expected {FORMAT!r}")
    if int(config.get("format_version", -1)) > FORMAT_VERSION:
        raise ExportError(
            f"{path}: format_version {config['format_version']} is newer than this "
            f"ganforge understands ({FORMAT_VERSION}); upgrade ganforge"
        )
    return config


def load_export(
    export_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """-> (generator in eval mode on ``device``, config dict). Weights load with strict=True."""
    config = read_export_config(export_dir)
    weights = Path(export_dir) / WEIGHTS_NAME
    if not weights.is_file():
        raise ExportError(f"{export_dir}: missing {WEIGHTS_NAME}")
    generator = build_generator(config["family"], config["kwargs"])
    state = load_file(str(weights), device="cpu")
    generator.load_state_dict(state, strict=True)
    return generator.eval().requires_grad_(False).to(device), config
