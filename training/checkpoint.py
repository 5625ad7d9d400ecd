"""Full, resumable training state on disk, written atomically.

A checkpoint is a folder ``checkpoints/ckpt-<images_seen:012d>/`` holding

- ``models.safetensors``: every network's ``state_dict`` under a ``<name>.`` prefix
  (generator, discriminator, g_ema) plus extra training tensors (``extra.<name>``);
- ``optim.pt``: the optimizers' ``state_dict``s (tensors and plain values only, so it loads with
  ``torch.load(weights_only=True)``);
- ``state.json``: counters and scalars (images_seen, step, augment p, ...), the world size it was
  saved with (informational: resuming on another world size is supported because all state is
  global and every random stream is derived from counters), and the format version;
- ``checksums.json``: size and sha256 of every other file of the folder (any backend's files,
  e.g. DeepSpeed's ``deepspeed/`` partitions), recorded at save time.

The folder is assembled under a temporary name (``.tmp-ckpt-*``, DeepSpeed: ``.staging-ckpt-*``)
and renamed into place, so a checkpoint is either complete or absent whatever kills the process;
a kill leaves only the temporary folder, removed by ``remove_stale_temp`` at the next start.
Disks still fail and files get truncated or copied partially: ``verify_checkpoint`` checks a
folder against its checksums before anything is loaded, and ``latest_valid_checkpoint`` falls
back to the newest checkpoint that passes, warning which one was skipped and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .networks.export import make_temp_dir, umask_modes

FORMAT_VERSION = 1
PREFIX = "ckpt-"
CHECKSUMS = "checksums.json"
TEMP_PREFIXES = (f".tmp-{PREFIX}", f".staging-{PREFIX}")


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
        (tmp / CHECKSUMS).write_text(json.dumps(_checksums(tmp), indent=2, sort_keys=True))
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksums(folder: Path) -> dict[str, Any]:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name != CHECKSUMS)
    return {
        "format_version": 1,
        "files": {
            f.relative_to(folder).as_posix(): {"size": f.stat().st_size, "sha256": _sha256(f)}
            for f in files
        },
    }


def verify_checkpoint(path: str | Path, *, hashes: bool = True) -> Path:
    """Raise ``CheckpointError`` naming the first missing, truncated or altered file of the
    checkpoint folder ``path`` (sizes, then sha256 with ``hashes``, against ``checksums.json``).
    Checkpoints written before checksums existed get a structural check (state.json parses,
    the safetensors header reads). -> ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: no such checkpoint folder; pass a folder under <run_dir>/checkpoints/"
        )
    listing = path / CHECKSUMS
    if listing.is_file():
        try:
            files = json.loads(listing.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{listing}: unreadable checksum list ({exc})") from None
        for name, want in sorted(files.items()):
            f = path / name
            if not f.is_file():
                raise CheckpointError(f"{f}: missing from the checkpoint")
            size = f.stat().st_size
            if size != want["size"]:
                raise CheckpointError(
                    f"{f}: {size} bytes, {want['size']} when saved (truncated or overwritten)"
                )
        if hashes:
            for name, want in sorted(files.items()):
                if _sha256(path / name) != want["sha256"]:
                    raise CheckpointError(
                        f"{path / name}: sha256 differs from the one recorded at save time"
                    )
    for required in ("state.json", "models.safetensors"):
        if not (path / required).is_file():
            raise CheckpointError(
                f"{path} is not a complete ganforge checkpoint: {required} is missing"
            )
    if not listing.is_file():
        try:
            json.loads((path / "state.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path / 'state.json'}: not valid JSON ({exc})") from None
        try:
            from safetensors import safe_open

            with safe_open(str(path / "models.safetensors"), framework="pt") as f:
                f.keys()
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(
                f"{path / 'models.safetensors'}: unreadable ({str(exc).splitlines()[0]})"
            ) from None
    return path


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    return [p for p in _checkpoint_folders(root) if (p / "state.json").is_file()]


def _checkpoint_folders(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def latest_valid_checkpoint(
    root: str | Path, warn: Callable[[str], None] | None = None
) -> Path | None:
    """The newest checkpoint under ``root`` that passes ``verify_checkpoint`` (None: there is
    none). Each newer one that fails is reported through ``warn`` (default: a UserWarning)
    with its reason; if every checkpoint fails, ``CheckpointError`` says so."""
    found = _checkpoint_folders(root)  # a folder that lost state.json is reported too
    bad: list[str] = []
    for path in reversed(found):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            bad.append(path.name)
            message = f"skipping corrupt checkpoint {path.name}: {exc}"
            (warn or (lambda m: warnings.warn(m, stacklevel=3)))(message)
            continue
        if bad:
            (warn or (lambda m: warnings.warn(m, stacklevel=3)))(
                f"resuming from {path.name}, the newest valid checkpoint (corrupt: {', '.join(bad)})"
            )
        return path
    if found:
        raise CheckpointError(
            f"{root}: all {len(found)} checkpoints are corrupt ({', '.join(bad)}); move them "
            f"away, or set train.resume=null to start over"
        )
    return None


def remove_stale_temp(root: str | Path) -> list[Path]:
    """Delete the temporary folders (``.tmp-ckpt-*``, ``.staging-ckpt-*``) a killed save left
    under ``root``; call at start on the main process, before any save. -> what was removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    stale = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(TEMP_PREFIXES)]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


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
    path = verify_checkpoint(path, hashes=False)  # sizes: cheap; callers verify hashes first
    try:
        state = json.loads((path / "state.json").read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path / 'state.json'}: not valid JSON ({exc})") from None
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']} is newer than this ganforge"
        )
    try:
        tensors = load_file(str(path / "models.safetensors"), device="cpu")
    except Exception as exc:  # noqa: BLE001 - SafetensorError is not an Exception subclass we own
        raise CheckpointError(
            f"{path / 'models.safetensors'}: unreadable ({str(exc).splitlines()[0]})"
        ) from None
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
        try:
            saved = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            raise CheckpointError(
                f"{path / 'optim.pt'}: unreadable ({str(exc).splitlines()[0]})"
            ) from None
        for name, opt in (optimizers or {}).items():
            if name in saved and hasattr(opt, "load_state_dict"):
                opt.load_state_dict(saved[name])
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return (state, extra, saved) if with_optimizers else (state, extra)
