"""Full, resumable training state on disk, written atomically.

A checkpoint is a folder ``checkpoints/ckpt-<images_seen:012d>/`` holding

- ``models.safetensors``: every network's ``state_dict`` under a ``<name>.`` prefix
  (generator, discriminator, g_ema) plus extra training tensors (``extra.<name>``);
- ``optim.pt``: the optimizers' ``state_dict``s (tensors and plain values only, so it loads with
  ``torch.load(weights_only=True)``);
- ``state.json``: counters and scalars (images_seen, step, augment p, ...), the world size it was
  saved with (informational: resuming on another world size is supported because all state is
  global and every random stream is derived from counters), and the format version.

The folder is assembled under a temporary name and renamed into place, so a checkpoint is either
complete or absent, whatever kills the process.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .networks.export import make_temp_dir, umask_modes

FORMAT_VERSION = 1
PREFIX = "ckpt-"


class CheckpointError(ValueError):
    """The checkpoint is missing, incomplete, or does not fit the current model."""


def checkpoint_name(images_seen: int) -> str:
    return f"{PREFIX}{images_seen:012d}"


def save_checkpoint(
    root: str | Path,
    *,
    images_seen: int,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, Any],
    state: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
    config_yaml: str | None = None,
    staging: Path | None = None,
) -> Path:
    """Write one checkpoint atomically; returns its folder. Call on the main process only.

    ``staging``: a folder already holding parts written by every rank (DeepSpeed optimizer
    partitions); it is completed and renamed into place like the private temp folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(images_seen)
    if staging is not None:
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging
    else:
        tmp = make_temp_dir(root, prefix=f".tmp-{final.name}-")
    try:
        tensors: dict[str, torch.Tensor] = {}
        for name, module in modules.items():
            for key, value in module.state_dict().items():
                tensors[f"{name}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
        for key, value in (extra_tensors or {}).items():
            tensors[f"extra.{key}"] = value.detach().to("cpu", copy=True).contiguous()
        save_file(tensors, str(tmp / "models.safetensors"))
        torch.save(
            {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in optimizers.items()},
            tmp / "optim.pt",
        )
        meta = {"format_version": FORMAT_VERSION, "images_seen": int(images_seen), **state}
        (tmp / "state.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if config_yaml is not None:
            (tmp / "config.yaml").write_text(config_yaml)
        umask_modes(tmp)
        for f in tmp.rglob("*"):  # durable before the rename makes it visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():  # same images_seen saved twice (e.g. signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file()
    ]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0: keep everything)."""
    if keep <= 0:
        return
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    path: str | Path,
    *,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, Any] | None = None,
    with_optimizers: bool = False,
):
    """Load weights into ``modules`` (strict) and state into ``optimizers`` (objects with
    ``load_state_dict``) -> (state.json dict, extra tensors[, raw optimizer state dicts])."""
    path = Path(path)
    if not (path / "state.json").is_file() or not (path / "models.safetensors").is_file():
        raise CheckpointError(
            f"{path} is not a complete ganforge checkpoint (needs state.json and "
            f"models.safetensors); pass a folder under <run_dir>/checkpoints/"
        )
    state = json.loads((path / "state.json").read_text())
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']} is newer than this ganforge"
        )
    tensors = load_file(str(path / "models.safetensors"), device="cpu")
    for name, module in modules.items():
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: {name} weights do not fit the configured model "
                f"(was the architecture changed?): {str(exc).splitlines()[0]}"
            ) from None
    saved: dict[str, Any] = {}
    if optimizers or with_optimizers:
        saved = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
        for name, opt in (optimizers or {}).items():
            if name in saved and hasattr(opt, "load_state_dict"):
                opt.load_state_dict(saved[name])
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return (state, extra, saved) if with_optimizers else (state, extra)
