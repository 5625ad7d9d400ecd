"""GAN losses as pure functions (implementation lands with the StyleGAN2 issue)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True)
class LossConfig:
    kind: Literal["nonsaturating", "wgan-gp"] = "nonsaturating"
    """nonsaturating logistic (StyleGAN2) or WGAN-GP with epsilon drift (ProGAN paper)."""
    r1_gamma: float = 10.0
    """R1 weight gamma (0: no R1)."""
    r1_interval: int = 16
    """Lazy regularisation: R1 every this many D steps, gamma scaled by the interval (1: every step)."""
    pl_weight: float = 2.0
    """Path-length regularisation weight (0: off)."""
    pl_interval: int = 4
    """Path-length regularisation every this many G steps."""
    pl_decay: float = 0.01
    """Decay of the path-length running mean."""
    pl_batch_shrink: int = 2
    """Path-length regularisation runs on batch // this."""
    style_mixing: float = 0.9
    """Probability of style-mixing regularisation (stylegan2; 0: off)."""
    gp_lambda: float = 10.0
    """WGAN-GP gradient-penalty weight."""
    drift: float = 0.001
    """WGAN-GP epsilon drift weight on real logits squared."""

    def __post_init__(self) -> None:
        for name in ("r1_gamma", "pl_weight", "pl_decay", "gp_lambda", "drift", "style_mixing"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("r1_interval", "pl_interval", "pl_batch_shrink"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {getattr(self, name)}")
        if self.style_mixing > 1:
            raise ValueError(f"style_mixing: is a probability in [0, 1], got {self.style_mixing}")
