"""Progressive-growing schedule (Karras et al. 2018): (resolution, alpha) from images seen.

(Implementation lands with the ProGAN issue; the config below is the contract.)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True)
class GrowthConfig:
    start_resolution: int = 4
    """First resolution trained (power of two >= 4)."""
    fade_kimg: float = 600.0
    """Length of each fade-in phase (alpha 0 -> 1) in kimg."""
    stable_kimg: float = 600.0
    """Length of each stable phase in kimg (the first resolution has only a stable phase)."""
    batch_per_resolution: dict[str, int] = field(default_factory=dict)
    """Global batch per resolution, e.g. {"4": 512, "128": 128}; missing ones use train.batch."""
    lr_per_resolution: dict[str, float] = field(default_factory=dict)
    """Learning rate per resolution (both G and D); missing ones use train.lr_g / lr_d."""
    reset_optimizer: bool = True
    """Reset Adam state when a new resolution starts (as the reference implementation)."""

    def __post_init__(self) -> None:
        r = self.start_resolution
        if r < 4 or r & (r - 1):
            raise ValueError(f"start_resolution: must be a power of two >= 4, got {r}")
        if self.fade_kimg < 0 or self.stable_kimg <= 0:
            raise ValueError("fade_kimg/stable_kimg: fade_kimg must be >= 0 and stable_kimg > 0")
        for key, value in {**self.batch_per_resolution, **self.lr_per_resolution}.items():
            k = int(key) if str(key).isdigit() else -1
            if k < 4 or k & (k - 1):
                raise ValueError(f"batch_per_resolution/lr_per_resolution: key {key!r} is not a power-of-two resolution")
            if value <= 0:
                raise ValueError(f"batch_per_resolution/lr_per_resolution[{key}]: must be positive, got {value}")
