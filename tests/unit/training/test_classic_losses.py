"""The classic GAN losses (BCE, hinge, LSGAN) on hand-computed inputs."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    d_bce_loss,
    d_hinge_loss,
    d_lsgan_loss,
    g_bce_loss,
    g_hinge_loss,
    g_lsgan_loss,
)

REAL = torch.tensor([[2.0], [-0.5]])
FAKE = torch.tensor([[-1.0], [0.0], [1.5]])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_d_bce_is_the_tutorials_bce_on_probabilities():
    # -log D(x) over reals, -log(1 - D(G(z))) over fakes, each averaged over its own batch.
    real_term = -(math.log(_sigmoid(2.0)) + math.log(_sigmoid(-0.5))) / 2
    fake_term = (
        -(math.log(1 - _sigmoid(-1.0)) + math.log(1 - _sigmoid(0.0)) + math.log(1 - _sigmoid(1.5)))
        / 3
    )
    assert d_bce_loss(REAL, FAKE).item() == pytest.approx(real_term + fake_term, rel=1e-6)
    # And torch's BCELoss on sigmoid outputs (the tutorial's formulation) agrees.
    bce = torch.nn.BCELoss()
    expected = bce(torch.sigmoid(REAL), torch.ones_like(REAL)) + bce(
        torch.sigmoid(FAKE), torch.zeros_like(FAKE)
    )
    assert d_bce_loss(REAL, FAKE).item() == pytest.approx(expected.item(), rel=1e-6)


def test_d_bce_is_stable_for_confident_discriminator():
    # sigmoid(100) == 1.0 in float32: BCELoss on probabilities would clamp at log(0).
    loss = d_bce_loss(torch.tensor([[100.0]]), torch.tensor([[-100.0]]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(2 * math.exp(-100), abs=1e-30)
    wrong = d_bce_loss(torch.tensor([[-100.0]]), torch.tensor([[100.0]]))
    assert wrong.item() == pytest.approx(200.0, rel=1e-6)


def test_g_bce_nonsaturating_and_saturating():
    expected_ns = (
        -(math.log(_sigmoid(-1.0)) + math.log(_sigmoid(0.0)) + math.log(_sigmoid(1.5))) / 3
    )
    assert g_bce_loss(FAKE).item() == pytest.approx(expected_ns, rel=1e-6)
    expected_sat = (
        math.log(1 - _sigmoid(-1.0)) + math.log(1 - _sigmoid(0.0)) + math.log(1 - _sigmoid(1.5))
    ) / 3
    assert g_bce_loss(FAKE, saturating=True).item() == pytest.approx(expected_sat, rel=1e-6)


def test_saturating_g_loss_vanishes_where_the_nonsaturating_does_not():
    # D rejects the fake confidently (logit -10): the saturating gradient is ~sigmoid(-10).
    logits = torch.tensor([[-10.0]], requires_grad=True)
    (grad_sat,) = torch.autograd.grad(g_bce_loss(logits, saturating=True), logits)
    (grad_ns,) = torch.autograd.grad(g_bce_loss(logits), logits)
    assert abs(grad_sat.item()) == pytest.approx(_sigmoid(-10.0), rel=1e-4)
    assert abs(grad_ns.item()) == pytest.approx(_sigmoid(10.0), rel=1e-4)


def test_hinge_losses_by_hand():
    # relu(1 - 2) = 0, relu(1 + 0.5) = 1.5 -> 0.75; relu(1 - 1) = 0, relu(1) = 1, relu(2.5) -> 3.5/3
    assert d_hinge_loss(REAL, FAKE).item() == pytest.approx(0.75 + 3.5 / 3, rel=1e-6)
    assert g_hinge_loss(FAKE).item() == pytest.approx(-(-1.0 + 0.0 + 1.5) / 3, rel=1e-6)
    # Margins satisfied: zero loss, zero gradient.
    assert d_hinge_loss(torch.tensor([[3.0]]), torch.tensor([[-2.0]])).item() == 0.0


def test_lsgan_losses_by_hand():
    # 1/2 mean((2-1)^2, (-0.5-1)^2) + 1/2 mean(1, 0, 2.25)
    expected_d = 0.5 * (1.0 + 2.25) / 2 + 0.5 * (1.0 + 0.0 + 2.25) / 3
    assert d_lsgan_loss(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    expected_g = ((-2.0) ** 2 + 1.0 + 0.5**2) / 3
    assert g_lsgan_loss(FAKE).item() == pytest.approx(expected_g, rel=1e-6)
    # The CycleGAN code's form: 0.5 * (MSE(real, 1) + MSE(fake, 0)), MSE(fake, 1); PatchGAN maps.
    real_map, fake_map = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    mse = torch.nn.functional.mse_loss
    torch.testing.assert_close(
        d_lsgan_loss(real_map, fake_map),
        0.5
        * (mse(real_map, torch.ones_like(real_map)) + mse(fake_map, torch.zeros_like(fake_map))),
    )
    torch.testing.assert_close(g_lsgan_loss(fake_map), mse(fake_map, torch.ones_like(fake_map)))
    # At the targets the losses are zero.
    assert d_lsgan_loss(torch.ones(3, 1), torch.zeros(3, 1)).item() == 0.0
    assert g_lsgan_loss(torch.ones(3, 1)).item() == 0.0


def test_losses_upcast_half_inputs_to_float32():
    real, fake = REAL.to(torch.bfloat16), FAKE.to(torch.bfloat16)
    for loss in (d_bce_loss(real, fake), d_hinge_loss(real, fake), d_lsgan_loss(real, fake)):
        assert loss.dtype == torch.float32
    for loss in (g_bce_loss(fake), g_bce_loss(fake, saturating=True), g_hinge_loss(fake)):
        assert loss.dtype == torch.float32
    assert g_lsgan_loss(fake).dtype == torch.float32
