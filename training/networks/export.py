"""The export contract: ``generator.json`` + ``weights.safetensors`` of G_ema.

The only artifact that leaves a run. ``deploy/`` and the MLflow pyfunc rebuild the generator from
the JSON (family + constructor kwargs) and load the weights with ``strict=True``; no pickles, no
code inside the artifact. Writes are atomic (temp file + rename). Also the home of
``atomic_write`` / ``make_temp_dir`` and of which metric names are lower-is-better.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable
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


def _create_beside(parent: Path, prefix: str, suffix: str, make: Callable[[str], None]) -> str:
    """A fresh, unique name in ``parent`` created by ``make`` (raises FileExistsError if taken)."""
    for _ in range(100):
        name = str(parent / f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            make(name)
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"{parent}: could not create a unique temporary name {prefix}*{suffix}")


def _create_file(name: str) -> None:
    # 0o666 & ~umask, like open(); mkstemp would create 0600 and the final file would keep it.
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def atomic_write(path: str | Path, write: Callable[[str], Any], suffix: str = ".tmp") -> Path:
    """Write a file so that it is either complete or absent: ``write(tmp)`` fills a temporary
    file beside ``path`` (``suffix`` for writers that infer the format), which is then renamed
    into place; on any failure the temporary file is removed. The file gets the mode any new
    file gets (0666 less the umask), or keeps the mode of the file it replaces. The one helper
    for every atomic write in ganforge; it lives here because ``deploy`` may import only
    ``training.networks``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path.parent, f".{path.name}.", suffix, _create_file)
    try:
        # The mode a new file gets here (0666 & ~umask, read back: reading the umask would
        # change it), or the replaced file's. Set after writing: some writers (safetensors)
        # replace the file with their own 0600 one.
        mode = stat.S_IMODE((path if path.exists() else Path(tmp)).stat().st_mode)
        write(tmp)
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new uniquely named folder in ``parent`` with the umask's mode (``mkdtemp`` makes 0700):
    the staging folder of a write that a rename makes visible (checkpoints)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(_create_beside(parent, prefix, "", lambda name: os.mkdir(name, 0o777)))


def umask_modes(folder: str | Path) -> None:
    """Give the files under ``folder`` (made by ``make_temp_dir``) the umask's file mode: writers
    such as safetensors create 0600 files, which a user's outputs should not be."""
    mode = stat.S_IMODE(Path(folder).stat().st_mode) & 0o666
    for f in Path(folder).rglob("*"):
        if f.is_file() and not f.is_symlink() and stat.S_IMODE(f.stat().st_mode) != mode:
            os.chmod(f, mode)


LOWER_IS_BETTER = ("fid", "kid", "_fd", "distance")
"""Metric names (in an export's ``meta.metrics``, MLflow, ``eval.keep_best``) that contain one of
these words are lower-is-better (distances); every other metric is higher-is-better."""


def lower_is_better(metric: str) -> bool:
    """True for the distances (fid, kid, classifier_fd, ...); accepts prefixes like ``metrics/``."""
    name = metric.rsplit("/", 1)[-1].lower()
    return any(word in name for word in LOWER_IS_BETTER)


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
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata=metadata))
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
    atomic_write(
        out / CONFIG_NAME,
        lambda tmp: Path(tmp).write_bytes(json.dumps(config, indent=2, sort_keys=True).encode()),
    )
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
