"""The ``train:`` section of a run config: length, batch, optimizers, EMA, schedule of outputs.

Plain dataclasses with no heavy imports, so that ``pipeline/config.py`` reads a YAML preset
without importing Accelerate or the trainer. Every family reads its optimizers from here
(``Family.optimizer``): ``optimizer_g`` for the generator group, ``optimizer_d`` for the
discriminator (critic) group; two generators and two discriminators (CycleGAN) share their
group's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

OptimizerKind = Literal["adam", "rmsprop"]


@dataclass(kw_only=True)
class OptimizerConfig:
    """One network group's optimizer; unset fields fall back to the shared ``train.*`` values."""

    kind: OptimizerKind = "adam"
    """adam (torch.optim.Adam; fused on CUDA) or rmsprop (torch.optim.RMSprop, as WGAN)."""
    lr: float | None = None
    """Learning rate (None: train.lr_g / train.lr_d for this group)."""
    betas: tuple[float, float] | None = None
    """Adam betas (None: train.betas). Ignored by rmsprop."""
    alpha: float = 0.99
    """RMSprop smoothing constant (torch's default; WGAN's reference code uses it). Ignored by adam."""
    eps: float | None = None
    """Denominator epsilon (None: train.eps)."""

    def __post_init__(self) -> None:
        if self.kind not in ("adam", "rmsprop"):
            raise ValueError(f"kind: must be adam or rmsprop, got {self.kind!r}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr: must be positive or null, got {self.lr}")
        if self.betas is not None and (
            len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas)
        ):
            raise ValueError(f"betas: must be two numbers in [0, 1) or null, got {self.betas}")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha: must be in [0, 1), got {self.alpha}")
        if self.eps is not None and self.eps <= 0:
            raise ValueError(f"eps: must be positive or null, got {self.eps}")


@dataclass(kw_only=True)
class TrainConfig:
    total_kimg: float = 25000.0
    """Training length in thousands of real images shown to D (all critic steps counted)."""
    batch: int = 32
    """Global batch size (all processes and accumulation steps together) of every phase."""
    batch_per_device: int | None = None
    """Images per device per forward pass (None: batch / world size); smaller values use
    gradient accumulation to reach ``batch``."""
    d_steps_per_g: int = 1
    """Critic (D) optimizer steps per G step (WGAN: 5). Each critic step reads its own real
    batch, so one training step shows D ``batch * d_steps_per_g`` real images and advances
    ``images_seen`` (kimg, ticks, schedules) by that much."""
    lr_g: float = 0.002
    """Generator learning rate (optimizer_g.lr overrides it)."""
    lr_d: float = 0.002
    """Discriminator learning rate (optimizer_d.lr overrides it)."""
    betas: tuple[float, float] = (0.0, 0.99)
    """Adam betas of both groups (before the lazy-regularisation correction)."""
    eps: float = 1e-8
    """Optimizer epsilon of both groups."""
    optimizer_g: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Generator-group optimizer (kind, and per-group lr/betas/alpha/eps overrides)."""
    optimizer_d: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Discriminator-group optimizer (kind, and per-group lr/betas/alpha/eps overrides)."""
    lr_rampdown_kimg: float = 0.0
    """Every learning rate falls linearly to zero over the last this many kimg of total_kimg
    (0: constant; on top of a family's own schedule, e.g. CycleGAN's decay)."""
    ema_kimg: float = 10.0
    """Half-life of the EMA weights (G_ema) in kimg."""
    ema_rampup: float | None = None
    """EMA ramp-up: the half-life is at most images_seen * this (None: no ramp-up)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Reduced precision of the networks' highest-resolution blocks (the networks cast
    themselves; losses and R1/path-length/GP gradients stay float32; fp16 adds a loss scaler)."""
    tf32: bool = True
    """CUDA only: let float32 matmuls/convolutions use TF32 tensor cores (about 2x faster on
    A100/H100, ~1e-3 relative error per op). NVlabs' StyleGAN2-ADA turns TF32 off; set false to
    match its arithmetic exactly."""
    max_bad_steps: int = 8
    """Stop (status diverged, last good checkpoint kept) after this many consecutive steps
    with a non-finite loss; each such step's update is skipped. Checked once per tick."""
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
    """torch.compile the networks for the main phases (lazy-regularisation phases, which need
    double backward, run the same modules uncompiled)."""
    cpu: bool = False
    """Force CPU even when a GPU is present."""
    channels_last: bool = True
    """Keep 4-D weights and the image batches in channels-last memory layout (NHWC): the
    layout oneDNN (CPU) and cuDNN tensor cores run fastest; the maths is unchanged. Measured on
    the digits preset at batch 16 (2-core CPU): 10.7 -> 8.0 s/kimg (docs/benchmarks.md). DeepSpeed
    runs NCHW whatever this says: it broadcasts and flattens parameters as contiguous buffers
    (``use_channels_last``)."""

    def __post_init__(self) -> None:
        if self.total_kimg <= 0:
            raise ValueError(f"total_kimg: must be positive, got {self.total_kimg}")
        if self.batch <= 0:
            raise ValueError(f"batch: must be a positive integer, got {self.batch}")
        if self.batch_per_device is not None and self.batch_per_device <= 0:
            raise ValueError(
                f"batch_per_device: must be positive or null, got {self.batch_per_device}"
            )
        if self.d_steps_per_g < 1:
            raise ValueError(f"d_steps_per_g: must be an integer >= 1, got {self.d_steps_per_g}")
        if self.max_bad_steps < 1:
            raise ValueError(f"max_bad_steps: must be an integer >= 1, got {self.max_bad_steps}")
        for name in ("lr_g", "lr_d", "tick_kimg", "ema_kimg", "eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {list(self.betas)}")
        for name in ("snapshot_ticks", "checkpoint_ticks", "keep_checkpoints", "grid_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.lr_rampdown_kimg < 0:
            raise ValueError(f"lr_rampdown_kimg: must be >= 0, got {self.lr_rampdown_kimg}")
        if self.ema_rampup is not None and self.ema_rampup <= 0:
            raise ValueError(f"ema_rampup: must be positive or null, got {self.ema_rampup}")

    @property
    def use_channels_last(self) -> bool:
        """``channels_last`` as the trainer applies it: off under DeepSpeed, whose engine views
        every parameter as a flat byte buffer (it needs contiguous NCHW weights)."""
        return self.channels_last and self.backend != "deepspeed"


__all__ = ["OptimizerConfig", "OptimizerKind", "TrainConfig"]
