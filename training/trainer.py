"""The GAN trainer on Accelerate (implementation follows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True)
class TrainConfig:
    total_kimg: float = 25000.0
    """Training length in thousands of real images shown to D."""
    batch: int = 32
    """Global batch size (all processes and accumulation steps together)."""
    batch_per_device: int | None = None
    """Images per device per forward pass (None: batch / world size); smaller values use
    gradient accumulation to reach ``batch``."""
    lr_g: float = 0.002
    """Generator Adam learning rate."""
    lr_d: float = 0.002
    """Discriminator Adam learning rate."""
    betas: tuple[float, float] = (0.0, 0.99)
    """Adam betas (before the lazy-regularisation correction)."""
    eps: float = 1e-8
    """Adam epsilon."""
    ema_kimg: float = 10.0
    """Half-life of the G_ema weights in kimg."""
    ema_rampup: float | None = None
    """EMA ramp-up: the half-life is at most images_seen * this (None: no ramp-up)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Autocast precision (Accelerate); losses and regularisers stay in float32."""
    seed: int = 0
    """Global seed; every rank derives its own streams from it."""
    tick_kimg: float = 4.0
    """Progress line and metrics every this many kimg."""
    snapshot_ticks: int = 50
    """Sample grid every this many ticks (0: only at the end)."""
    checkpoint_ticks: int = 50
    """Full checkpoint every this many ticks (0: only at the end)."""
    keep_checkpoints: int = 3
    """Checkpoints kept on disk (older ones are deleted; 0: keep all)."""
    resume: str | None = "auto"
    """auto: continue from the latest checkpoint of this run dir if any; a checkpoint path; None: start fresh."""
    grid_size: int = 64
    """Images in the sample grid (fixed seeds 0..grid_size-1)."""
    backend: Literal["ddp", "deepspeed"] = "ddp"
    """Distributed backend: DDP (default) or DeepSpeed ZeRO (see docs/distributed.md)."""
    zero_stage: Literal[1, 2] = 2
    """DeepSpeed ZeRO stage (backend: deepspeed). ZeRO-3 is not supported (R1 needs the full D)."""
    compile: bool = False
    """torch.compile G and D."""
    cpu: bool = False
    """Force CPU even when a GPU is present."""

    def __post_init__(self) -> None:
        if self.total_kimg <= 0:
            raise ValueError(f"total_kimg: must be positive, got {self.total_kimg}")
        if self.batch <= 0:
            raise ValueError(f"batch: must be a positive integer, got {self.batch}")
        if self.batch_per_device is not None and self.batch_per_device <= 0:
            raise ValueError(f"batch_per_device: must be positive or null, got {self.batch_per_device}")
        for name in ("lr_g", "lr_d", "tick_kimg", "ema_kimg"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {list(self.betas)}")
        for name in ("snapshot_ticks", "checkpoint_ticks", "keep_checkpoints", "grid_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.ema_rampup is not None and self.ema_rampup <= 0:
            raise ValueError(f"ema_rampup: must be positive or null, got {self.ema_rampup}")
