"""Differentiable augmentation: DiffAugment (Zhao et al. 2020) and ADA (Karras et al. 2020).

(Implementation lands with the StyleGAN2 issue; the config below is the contract.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True)
class AugmentConfig:
    mode: Literal["none", "diffaugment", "ada", "fixed"] = "ada"
    """none: no augmentation; diffaugment: DiffAugment ``policy`` always on; ada: ADA pipeline
    with adaptive p; fixed: ADA pipeline at constant p."""
    policy: str = "color,translation,cutout"
    """DiffAugment policies, comma-separated subset of color, translation, cutout."""
    pipeline: str = "bgc"
    """ADA pipeline preset: b (blit: xflip, rot90, int translation), g (general geometric),
    c (color), f (image-space filtering is not implemented), co (cutout); e.g. bgc, bgccutout."""
    p: float = 0.0
    """Initial augment probability (ada) or the constant one (fixed)."""
    target: float = 0.6
    """ADA target for E[sign(D(real))]."""
    ada_kimg: float = 500.0
    """ADA speed: kimg for p to move from 0 to 1."""
    interval: int = 4
    """Adjust p every this many D steps."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p: must be in [0, 1], got {self.p}")
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target: must be in (0, 1), got {self.target}")
        if self.ada_kimg <= 0:
            raise ValueError(f"ada_kimg: must be positive, got {self.ada_kimg}")
        if self.interval <= 0:
            raise ValueError(f"interval: must be a positive integer, got {self.interval}")
        valid = {"color", "translation", "cutout"}
        bad = [p for p in self.policy.split(",") if p.strip() and p.strip() not in valid]
        if bad:
            raise ValueError(f"policy: unknown DiffAugment policy {bad[0]!r}; valid: color, translation, cutout")
