"""The run config: one tree of the components' typed dataclasses, loaded from YAML presets.

Each component owns its dataclass next to its code; this module only composes them, loads
presets (``pipeline/presets/*.yaml``, or any YAML path), applies ``--set key.path=value``
overrides and saves the resolved config beside the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_prep.config import PrepConfig
from training.augment import AugmentConfig
from training.data import DataConfig
from training.families.cyclegan import CycleGANConfig
from training.growth import GrowthConfig
from training.losses import LossConfig
from training.metrics import EvalConfig
from training.networks.config import ModelConfig
from training.networks.export import atomic_write
from training.tracking import TrackingConfig
from training.train_config import TrainConfig

from .configtools import ConfigError, apply_overrides, deep_merge, from_dict, read_yaml, to_dict

PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "digits"


@dataclass(kw_only=True)
class RunConfig:
    name: str = "ganforge"
    """Run name: the run directory is ``<work_dir>/runs/<name>``."""
    work_dir: str = "work"
    """Where shards, runs, the local MLflow store and outputs go."""
    prep: PrepConfig = field(default_factory=PrepConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)
    """Two-domain translation (model.family: cyclegan): domains, loss weights, image pools."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name: must be a non-empty name without '/', got {self.name!r}")

    # -- derived locations -------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return Path(self.work_dir) / "runs" / self.name

    @property
    def data_dir(self) -> str:
        if self.prep.out:
            return self.prep.out
        stem = Path(self.prep.source.rstrip("/")).name.split(".")[0] or "data"
        return str(Path(self.work_dir) / "data" / f"{stem}-{self.prep.resolution}")

    @property
    def manifest(self) -> str:
        return self.data.manifest or self.data_dir


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    candidate = PRESETS_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(
            f"unknown preset {name_or_path!r}; built-in presets: {', '.join(list_presets())} "
            f"(or give a path to a YAML file)"
        )
    return candidate


def _load_raw(name_or_path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a preset, following ``base: other-preset`` inheritance."""
    path = preset_path(name_or_path)
    if str(path) in seen:
        raise ConfigError(f"{path}: preset inheritance loops through {' -> '.join(seen)}")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base must be a preset name or path, got {base!r}")
        # a built-in preset name, else a path relative to this file
        target = base if base in list_presets() else str(path.parent / base)
        data = deep_merge(_load_raw(target, seen + (str(path),)), data)
    return data


def load_config(preset: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Preset (name or YAML path; None: the default) + ``key.path=value`` overrides -> RunConfig."""
    raw = _load_raw(preset or DEFAULT_PRESET)
    try:
        raw = apply_overrides(RunConfig, raw, list(overrides or []))
        return from_dict(RunConfig, raw)
    except ConfigError as exc:
        where = preset or DEFAULT_PRESET
        raise ConfigError(f"{exc} (preset: {where})") from None


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config atomically."""
    text = config_to_yaml(cfg)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def config_from_yaml_file(path: str | Path) -> RunConfig:
    """Reload a resolved config (e.g. a run's config.yaml)."""
    return from_dict(RunConfig, read_yaml(path))
