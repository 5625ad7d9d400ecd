"""EMA half-life and update math."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from training.ema import ema_beta, update_ema


def test_ema_beta_by_hand():
    # 10 kimg half-life, batch 32: 0.5 ** (32 / 10000).
    assert ema_beta(32, 10.0, 1_000_000) == pytest.approx(0.5 ** (32 / 10_000))
    # Ramp-up 0.05 at 100k images: half-life min(10000, 5000) = 5000 images.
    assert ema_beta(32, 10.0, 100_000, rampup=0.05) == pytest.approx(0.5 ** (32 / 5_000))
    # Ramp-up inactive once images_seen * rampup exceeds the half-life.
    assert ema_beta(32, 10.0, 10_000_000, rampup=0.05) == pytest.approx(0.5 ** (32 / 10_000))
    # At the very start with ramp-up, G_ema just copies G.
    assert ema_beta(32, 10.0, 0, rampup=0.05) == 0.0
    # After ema_kimg thousand images (at any batch size), the old average keeps half its weight.
    for batch in (4, 64):
        assert ema_beta(batch, 2.0, 1e9) ** (2000 / batch) == pytest.approx(0.5)


def test_update_ema_lerps_params_and_copies_buffers():
    torch.manual_seed(0)
    module = nn.BatchNorm1d(3)  # has both parameters and buffers
    ema = copy.deepcopy(module)
    with torch.no_grad():
        module.weight.fill_(2.0)
        module.bias.fill_(-1.0)
        module.running_mean.fill_(5.0)
    update_ema(ema, module, beta=0.75)
    torch.testing.assert_close(ema.weight, torch.full((3,), 0.75 * 1.0 + 0.25 * 2.0))
    torch.testing.assert_close(ema.bias, torch.full((3,), 0.75 * 0.0 + 0.25 * -1.0))
    torch.testing.assert_close(ema.running_mean, torch.full((3,), 5.0))
    assert not ema.weight.requires_grad or ema.weight.grad is None
    update_ema(ema, module, beta=0.0)  # beta 0: exact copy
    torch.testing.assert_close(ema.weight, module.weight)


def test_update_ema_on_generator_and_name_mismatch():
    from training.networks.stylegan2 import Generator

    kwargs = dict(z_dim=8, w_dim=8, map_depth=1, img_resolution=8, channel_base=32, channel_max=8)
    generator = Generator(**kwargs)
    g_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    generator.mapping(torch.randn(4, 8), None, update_emas=True)  # move w_avg (a buffer)
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(1.0)
    update_ema(g_ema, generator, beta=0.5)
    torch.testing.assert_close(g_ema.mapping.w_avg, generator.mapping.w_avg)
    for (_, p), (_, q) in zip(generator.named_parameters(), g_ema.named_parameters()):
        torch.testing.assert_close(q, p - 0.5)
    # A torch.compile wrapper (parameter names prefixed with _orig_mod.) is unwrapped.
    update_ema(g_ema, torch.compile(generator, backend="eager"), beta=0.0)
    torch.testing.assert_close(
        g_ema.synthesis.blocks["8"].conv1.weight, generator.synthesis.blocks["8"].conv1.weight
    )
    with pytest.raises(ValueError, match="names differ"):
        update_ema(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.5)
