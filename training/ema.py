"""Exponential moving average of the generator weights (G_ema), StyleGAN2-ADA style.

The EMA is specified as a half-life in kimg (Karras et al. 2019/2020, NVlabs ``training_loop``):
after ``ema_kimg`` thousand images, the weight of the old average has halved, whatever the batch
size. With ramp-up, the half-life is at most ``images_seen * rampup``, so that early in training
G_ema follows G closely instead of averaging the random initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(
    batch: int, ema_kimg: float, images_seen: int | float, rampup: float | None = None
) -> float:
    """Decay per step of ``batch`` images: ``beta = 0.5 ** (batch / ema_nimg)``.

    ema_nimg = ema_kimg * 1000, or min(ema_nimg, images_seen * rampup) with ramp-up (None or 0:
    no ramp-up). beta in [0, 1); 0 means "copy G" (e.g. at images_seen = 0 with ramp-up).
    """
    ema_nimg = ema_kimg * 1000
    if rampup:
        ema_nimg = min(ema_nimg, images_seen * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


def _unwrap(module: nn.Module) -> nn.Module:
    while True:
        if isinstance(module, torch._dynamo.eval_frame.OptimizedModule):
            module = module._orig_mod
        elif isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        else:
            return module


@torch.no_grad()
def update_ema(ema_module: nn.Module, module: nn.Module, beta: float) -> None:
    """``ema_param <- lerp(param, ema_param, beta) = beta * ema + (1 - beta) * param``; buffers
    (w_avg, noise_const, ...) are copied, as NVlabs.

    Both modules must have the same architecture. ``torch.compile`` and DDP wrappers are
    unwrapped (their parameter names carry a prefix). Parameters are matched by name, so an
    unexpected mismatch raises instead of silently averaging the wrong tensors.
    """
    module, ema_module = _unwrap(module), _unwrap(ema_module)
    params = dict(module.named_parameters())
    ema_params = dict(ema_module.named_parameters())
    if params.keys() != ema_params.keys():
        missing = sorted(params.keys() ^ ema_params.keys())[:5]
        raise ValueError(
            f"update_ema: parameter names differ between module and ema_module (e.g. {missing})"
        )
    ema_list = [ema_params[name] for name in params]
    src_list = [params[name].detach().to(ema_params[name].dtype) for name in params]
    if ema_list:
        # One fused kernel for all parameters instead of one lerp per tensor.
        torch._foreach_lerp_(ema_list, src_list, 1.0 - beta)
    buffers = dict(module.named_buffers())
    for name, ema_buffer in ema_module.named_buffers():
        if name in buffers:
            ema_buffer.copy_(buffers[name])
