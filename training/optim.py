"""Optimizers from a family's :class:`~training.family.OptimizerSpec`.

Adam (``torch.optim.Adam``, fused: one kernel for all parameters, its step counters stay on the
device, and it skips a bad update on the device; on CUDA as on CPU, so CPU tests exercise the
same path) or RMSprop (WGAN; ``capturable`` on CUDA so its step counter stays on the
device). Lazy regularisation (StyleGAN2 appendix B; NVlabs ``training_loop.py``): a network that
takes an extra regularisation step every ``reg_interval`` steps trains with ``lr * c`` and
``betas ** c`` (RMSprop: ``alpha ** c``), ``c = reg_interval / (reg_interval + 1)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .family import OptimizerSpec


def lazy_ratio(spec: OptimizerSpec) -> float:
    """c = interval / (interval + 1) for a lazily regularised network, else 1."""
    interval = spec.reg_interval
    return 1.0 if interval is None or interval <= 1 else interval / (interval + 1)


def lr_factor(images_seen: int, total_images: int, decay_start: int) -> float:
    """1 until ``decay_start``, then linear to 0 at ``total_images`` (CycleGAN's schedule, and
    ``train.lr_rampdown_kimg``)."""
    if images_seen <= decay_start or total_images <= decay_start:
        return 1.0
    return max(0.0, 1.0 - (images_seen - decay_start) / (total_images - decay_start))


def build_optimizer(
    spec: OptimizerSpec, params: Iterable[torch.nn.Parameter], device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer of ``spec`` with the lazy-regularisation correction applied."""
    c = lazy_ratio(spec)
    cuda = torch.device(device).type == "cuda"
    if spec.kind == "adam":
        betas = (spec.betas[0] ** c, spec.betas[1] ** c)
        return torch.optim.Adam(params, lr=spec.lr * c, betas=betas, eps=spec.eps, fused=True)
    if spec.kind == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=spec.lr * c, alpha=spec.alpha**c, eps=spec.eps, capturable=cuda
        )
    raise ValueError(f"optimizer kind: must be adam or rmsprop, got {spec.kind!r}")


__all__ = ["build_optimizer", "lazy_ratio", "lr_factor"]
