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
from safetensors import SafetensorError
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


LOWER_IS_BETTER = ("fid", "kid", "fd", "distance")
"""Metric names (in an export's ``meta.metrics``, MLflow, ``eval.keep_best``) one of whose
``_``-separated words starts with one of these (``fid``, ``fid50k_full``, ``classifier_fd``) are
lower-is-better (distances); every other metric (``confident``, ``coverage``) is higher-is-better."""


def lower_is_better(metric: str) -> bool:
    """True for the distances (fid, kid, classifier_fd, ...); accepts prefixes like ``metrics/``."""
    name = metric.rsplit("/", 1)[-1].lower()
    return any(word.startswith(LOWER_IS_BETTER) for word in name.split("_"))


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
    if not path.is_file() and (Path(export_dir) / TRANSLATOR_CONFIG_NAME).is_file():
        raise ExportError(
            f"{export_dir}: this export is a translator ({TRANSLATOR_CONFIG_NAME}), not a "
            f"generator; use `ganforge translate`"
        )
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
    path = Path(export_dir) / CONFIG_NAME
    for key, kind in _GENERATOR_FIELDS.items():
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise ExportError(
                f"{path}: {key}: expected {kind.__name__}, got {config.get(key)!r:.40}; "
                f"re-export the run (`ganforge train` writes export/)"
            )
    weights = Path(export_dir) / WEIGHTS_NAME
    if not weights.is_file():
        raise ExportError(f"{export_dir}: missing {WEIGHTS_NAME}")
    try:
        generator = build_generator(config["family"], config["kwargs"])
    except (KeyError, TypeError, ValueError) as exc:  # unknown family, kwargs that do not fit
        detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # no repr quotes
        raise ExportError(f"{path}: cannot build the generator ({detail})") from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:  # truncated, overwritten, not safetensors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(
            f"{weights}: not a readable safetensors file ({first[:200]}); re-export or "
            f"download it again"
        ) from None
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing/unexpected keys, shapes that differ
        first = str(exc).splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise ExportError(
            f"{weights}: does not fit the {config['family']} generator of {CONFIG_NAME} "
            f"({detail[:200]}); the two files come from different exports"
        ) from None
    return generator.eval().requires_grad_(False).to(device), config


_GENERATOR_FIELDS = {
    "family": str,
    "kwargs": dict,
    "z_dim": int,
    "c_dim": int,
    "resolution": int,
    "channels": int,
}
"""Fields of generator.json that loading a generator relies on, with their types."""


# ----------------------------------------------------------------------------------------------
# Translators (image -> image, e.g. CycleGAN): ``translator.json`` + ``weights.safetensors``
# holding one generator per direction (keys ``a2b.*``, ``b2a.*``). Still no code in the artifact.

TRANSLATOR_FORMAT = "ganforge-translator"
TRANSLATOR_FORMAT_VERSION = 1
TRANSLATOR_CONFIG_NAME = "translator.json"
DIRECTIONS = ("a2b", "b2a")
# translator family -> (module of this package, generator class); not in FAMILIES: these
# networks take images, not latents
TRANSLATOR_FAMILIES: dict[str, tuple[str, str]] = {"cyclegan": ("cyclegan", "ResnetGenerator")}
# how pixels map to the networks' inputs/outputs (recorded in the config for other runtimes)
TRANSLATOR_NORMALISATION = {
    "input": "x / 127.5 - 1 (uint8 RGB or L -> [-1, 1])",
    "output": "floor(y * 127.5 + 128) clipped to 0..255 (as every ganforge image output)",
    "range": [-1.0, 1.0],
}


def export_kind(export_dir: str | Path) -> str:
    """``generator`` or ``translator``: what the export folder holds (by its config file)."""
    if (Path(export_dir) / CONFIG_NAME).is_file():
        return "generator"
    if (Path(export_dir) / TRANSLATOR_CONFIG_NAME).is_file():
        return "translator"
    raise ExportError(
        f"{export_dir}: neither {CONFIG_NAME} nor {TRANSLATOR_CONFIG_NAME}; expected a ganforge "
        f"export folder as written by `ganforge train`"
    )


def build_translator(family: str, kwargs: dict) -> torch.nn.Module:
    import importlib

    if family not in TRANSLATOR_FAMILIES:
        raise ExportError(
            f"unknown translator family {family!r}; valid: {', '.join(TRANSLATOR_FAMILIES)}"
        )
    module, cls = TRANSLATOR_FAMILIES[family]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)(**kwargs)


def save_translator_export(
    out_dir: str | Path,
    generators: dict[str, torch.nn.Module],
    *,
    family: str,
    kwargs: dict[str, dict[str, Any]],
    resolution: int,
    channels: int,
    domains: dict[str, dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the direction generators (unwrapped, uncompiled; ``{"a2b": G_AB, "b2a": G_BA}``)
    as a translator export folder; returns the folder."""
    unknown = set(generators) - set(DIRECTIONS)
    if unknown or not generators or set(kwargs) != set(generators):
        raise ValueError(
            f"translator export: directions must be among {DIRECTIONS} with kwargs for each, "
            f"got {sorted(generators)} / {sorted(kwargs)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        f"{direction}.{k}": v.detach().to("cpu", copy=True).contiguous()
        for direction, g in generators.items()
        for k, v in g.state_dict().items()
    }
    metadata = {"format": TRANSLATOR_FORMAT, "format_version": str(TRANSLATOR_FORMAT_VERSION)}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata=metadata))
    config = {
        "format": TRANSLATOR_FORMAT,
        "format_version": TRANSLATOR_FORMAT_VERSION,
        "kind": "translator",
        "family": family,
        "directions": [d for d in DIRECTIONS if d in generators],
        "kwargs": kwargs,
        "resolution": int(resolution),
        "channels": int(channels),
        "size_multiple": 4,
        "normalisation": TRANSLATOR_NORMALISATION,
        "domains": dict(domains or {}),
        "meta": dict(meta or {}),
    }
    atomic_write(
        out / TRANSLATOR_CONFIG_NAME,
        lambda tmp: Path(tmp).write_bytes(json.dumps(config, indent=2, sort_keys=True).encode()),
    )
    return out


def read_translator_config(export_dir: str | Path) -> dict[str, Any]:
    path = Path(export_dir) / TRANSLATOR_CONFIG_NAME
    if not path.is_file():
        hint = (
            " (it holds a generator: use `ganforge generate`)"
            if (Path(export_dir) / CONFIG_NAME).is_file()
            else ""
        )
        raise ExportError(f"{export_dir}: no {TRANSLATOR_CONFIG_NAME}; not a translator{hint}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None
    if config.get("format") != TRANSLATOR_FORMAT:
        raise ExportError(
            f"{path}: format is {config.get('format')!r}, expected {TRANSLATOR_FORMAT!r}"
        )
    if int(config.get("format_version", -1)) > TRANSLATOR_FORMAT_VERSION:
        raise ExportError(
            f"{path}: format_version {config['format_version']} is newer than this ganforge "
            f"understands ({TRANSLATOR_FORMAT_VERSION}); upgrade ganforge"
        )
    missing = [d for d in config.get("directions", []) if d not in config.get("kwargs", {})]
    if not config.get("directions") or missing:
        raise ExportError(f"{path}: directions/kwargs are incomplete ({missing or 'none'})")
    return config


def load_translator_export(
    export_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """-> ({direction: generator in eval mode on ``device``}, config). strict=True per direction."""
    config = read_translator_config(export_dir)
    weights = Path(export_dir) / WEIGHTS_NAME
    if not weights.is_file():
        raise ExportError(f"{export_dir}: missing {WEIGHTS_NAME}")
    state = load_file(str(weights), device="cpu")
    generators = {}
    for direction in config["directions"]:
        g = build_translator(config["family"], config["kwargs"][direction])
        prefix = f"{direction}."
        g.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True
        )
        generators[direction] = g.eval().requires_grad_(False).to(device)
    return generators, config
