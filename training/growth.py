"""Progressive-growing schedule (Karras et al. 2018, sec. 2 and appendix A.1): everything that
depends on the training position is a pure function of ``images_seen``.

Phases, starting at ``start_resolution`` S and ending at the final resolution F::

    phase 0:        S, stable for stable_kimg                     (alpha 1)
    phase 2k - 1:   S * 2^k, fade-in for fade_kimg                (alpha 0 -> 1, linear in images)
    phase 2k:       S * 2^k, stable for stable_kimg               (alpha 1)
    last phase:     F, stable forever

This is the reference ``TrainingSchedule`` (``lod_training_kimg`` / ``lod_transition_kimg``)
expressed as (resolution, alpha) instead of a level of detail. Resuming needs only the counter.

``downsample_reals`` brings real images to the current resolution and blends them across a
fade-in exactly as the generator blends its outputs, so D sees the same mixture of levels of
detail for reals and fakes (reference ``train.process_reals``, "FadeLOD").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass(kw_only=True)
class GrowthConfig:
    start_resolution: int = 4
    """First resolution trained (power of two >= 4)."""
    fade_kimg: float = 600.0
    """Length of each fade-in phase (alpha 0 -> 1) in kimg (0: new resolutions start at alpha 1)."""
    stable_kimg: float = 600.0
    """Length of each stable phase in kimg (the first resolution has only a stable phase)."""
    batch_per_resolution: dict[str, int] = field(default_factory=dict)
    """Global batch per resolution, e.g. {"4": 512, "128": 128}; missing ones use train.batch."""
    lr_per_resolution: dict[str, float] = field(default_factory=dict)
    """Learning rate per resolution (both G and D); missing ones use train.lr_g / lr_d."""
    reset_optimizer: bool = True
    """Reset Adam state whenever a new phase starts (each fade-in and each stable phase, as the
    reference's ``reset_opt_for_new_lod``): compare ``Phase.phase_index`` between steps."""

    def __post_init__(self) -> None:
        r = self.start_resolution
        if r < 4 or r & (r - 1):
            raise ValueError(f"start_resolution: must be a power of two >= 4, got {r}")
        if self.fade_kimg < 0 or self.stable_kimg <= 0:
            raise ValueError("fade_kimg/stable_kimg: fade_kimg must be >= 0 and stable_kimg > 0")
        for name in ("batch_per_resolution", "lr_per_resolution"):
            table = getattr(self, name)
            for key, value in table.items():
                k = int(key) if str(key).isdigit() else -1
                if k < 4 or k & (k - 1):
                    raise ValueError(f"{name}: key {key!r} is not a power-of-two resolution >= 4")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise ValueError(f"{name}[{key}]: must be a positive number, got {value!r}")
                if name == "batch_per_resolution" and int(value) != value:
                    raise ValueError(f"{name}[{key}]: must be an integer, got {value!r}")
            # YAML turns `4: 128` into an int key: normalise to the documented string keys.
            cast = int if name == "batch_per_resolution" else float
            setattr(self, name, {str(int(k)): cast(v) for k, v in table.items()})


@dataclass(frozen=True)
class Phase:
    """Where training stands in the growth schedule."""

    resolution: int
    """Resolution G produces and D reads in this phase."""
    alpha: float
    """Fade-in weight of the newest block in [0, 1] (1 outside fade-in phases)."""
    phase_index: int
    """0 for the first stable phase; 2k - 1 / 2k for the k-th fade / stable phase."""
    phase_start_images: int
    """Images seen when this phase started."""
    fading: bool
    """True during a fade-in phase."""


def _images(kimg: float) -> int:
    return int(round(kimg * 1000))


def _num_growths(cfg: GrowthConfig, final_resolution: int) -> int:
    f = final_resolution
    if f < cfg.start_resolution or f & (f - 1):
        raise ValueError(
            f"final_resolution: must be a power of two >= growth.start_resolution "
            f"({cfg.start_resolution}), got {final_resolution}"
        )
    return int(math.log2(f // cfg.start_resolution))


def growth_phase(images_seen: int, cfg: GrowthConfig, final_resolution: int) -> Phase:
    """-> the Phase at ``images_seen`` real images shown to D (see the module docstring)."""
    if images_seen < 0:
        raise ValueError(f"images_seen: must be >= 0, got {images_seen}")
    growths = _num_growths(cfg, final_resolution)
    fade, stable = _images(cfg.fade_kimg), _images(cfg.stable_kimg)
    if images_seen < stable or growths == 0:
        return Phase(
            resolution=cfg.start_resolution,
            alpha=1.0,
            phase_index=0,
            phase_start_images=0,
            fading=False,
        )
    k, into = divmod(images_seen - stable, fade + stable)  # k: completed (fade + stable) pairs
    if k >= growths:  # past the last stable phase: stay at the final resolution
        start = stable + (growths - 1) * (fade + stable) + fade
        return Phase(
            resolution=final_resolution,
            alpha=1.0,
            phase_index=2 * growths,
            phase_start_images=start,
            fading=False,
        )
    resolution = cfg.start_resolution * 2 ** (k + 1)
    start = stable + k * (fade + stable)
    if into < fade:
        return Phase(
            resolution=resolution,
            alpha=into / fade,
            phase_index=2 * k + 1,
            phase_start_images=start,
            fading=True,
        )
    return Phase(
        resolution=resolution,
        alpha=1.0,
        phase_index=2 * k + 2,
        phase_start_images=start + fade,
        fading=False,
    )


def growth_end_kimg(cfg: GrowthConfig, final_resolution: int) -> float:
    """kimg at which the final resolution's first stable phase ends (growth is complete)."""
    growths = _num_growths(cfg, final_resolution)
    return cfg.stable_kimg + growths * (cfg.fade_kimg + cfg.stable_kimg)


def batch_for(resolution: int, cfg: GrowthConfig, default_batch: int) -> int:
    """Global batch at ``resolution``: ``batch_per_resolution[str(resolution)]`` or the default."""
    return int(cfg.batch_per_resolution.get(str(resolution), default_batch))


def lr_for(resolution: int, cfg: GrowthConfig, default_lr: float) -> float:
    """Learning rate at ``resolution``: ``lr_per_resolution[str(resolution)]`` or the default."""
    return float(cfg.lr_per_resolution.get(str(resolution), default_lr))


def downsample_reals(
    images: torch.Tensor, resolution: int, alpha: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Real images at the shard resolution -> the current ``resolution``, faded like G's output.

    images: [N, C, H, H] (H a power-of-two multiple of ``resolution``), any float range.
    Box filter (average pooling, as the reference ``downscale2d``) to ``resolution``; while a new
    resolution fades in (alpha < 1) the result is
    ``lerp(upsample_nearest(avgpool2x2(x)), x, alpha)``, mirroring the generator's
    ``lerp(upsample(torgb_prev), torgb_new, alpha)``. -> [N, C, resolution, resolution].
    """
    size = images.shape[-1]
    if (
        images.shape[-2] != size
        or resolution > size
        or size % resolution
        or (size // resolution) & (size // resolution - 1)
    ):
        raise ValueError(
            f"resolution: {resolution} must be the images' size {tuple(images.shape[-2:])} "
            f"divided by a power of two"
        )
    factor = size // resolution
    x = F.avg_pool2d(images, kernel_size=factor) if factor > 1 else images
    if isinstance(alpha, torch.Tensor) or alpha < 1.0:
        if resolution < 2:
            raise ValueError("resolution: a fade needs resolution >= 2")
        coarse = F.interpolate(F.avg_pool2d(x, kernel_size=2), scale_factor=2.0, mode="nearest")
        x = coarse + (x - coarse) * alpha
    return x


__all__ = [
    "GrowthConfig",
    "Phase",
    "batch_for",
    "downsample_reals",
    "growth_end_kimg",
    "growth_phase",
    "lr_for",
]
