"""GAN losses on hand-computed inputs."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    LossConfig,
    d_logistic_loss,
    d_wgan_loss,
    decaying_weight,
    epsilon_drift,
    g_nonsaturating_loss,
    g_wgan_loss,
    gradient_penalty,
    lazy_regularization_adam,
    mode_seeking_loss,
    path_length_penalty,
    r1_penalty,
)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_logistic_losses_match_hand_computed_softplus():
    real = torch.tensor([[0.0], [2.0]])
    fake = torch.tensor([[-1.0], [3.0], [0.5]])
    expected_d = (_softplus(-1) + _softplus(3) + _softplus(0.5)) / 3 + (
        _softplus(0) + _softplus(-2)
    ) / 2
    assert d_logistic_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    expected_g = (_softplus(1) + _softplus(-3) + _softplus(-0.5)) / 3
    assert g_nonsaturating_loss(fake).item() == pytest.approx(expected_g, rel=1e-6)
    # log 2 at logits 0: D can't tell.
    zeros = torch.zeros(4, 1)
    assert d_logistic_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))


def test_r1_zero_for_constant_discriminator():
    images = torch.randn(3, 1, 4, 4, requires_grad=True)
    bias = torch.tensor(1.5, requires_grad=True)
    logits = images.sum(dim=[1, 2, 3], keepdim=True) * 0 + bias
    assert r1_penalty(logits, images).item() == 0.0


def test_r1_analytic_for_linear_discriminator_and_differentiable():
    # D(x) = <w, x>: grad = w for every sample, R1 = ||w||^2.
    w = torch.randn(1, 3, 4, 4, requires_grad=True)
    images = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (images * w).sum(dim=[1, 2, 3]).unsqueeze(1)
    penalty = r1_penalty(logits, images)
    assert penalty.item() == pytest.approx(w.detach().square().sum().item(), rel=1e-5)
    # create_graph: d||w||^2 / dw = 2w.
    (grad_w,) = torch.autograd.grad(penalty, w)
    torch.testing.assert_close(grad_w, 2 * w.detach())


def test_r1_requires_grad_on_images():
    images = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(torch.zeros(2, 1, requires_grad=True), images)


def test_path_length_for_linear_generator():
    # images = A ws (per pixel linear map): J^T y is analytic; with a fixed noise y we can
    # compute the lengths by hand.
    torch.manual_seed(0)
    n, num_ws, w_dim, h = 4, 3, 5, 2
    weight = torch.randn(num_ws * w_dim, 1 * h * h, requires_grad=True)
    ws = torch.randn(n, num_ws, w_dim, requires_grad=True)
    images = (ws.flatten(1) @ weight).reshape(n, 1, h, h)
    noise = torch.randn(n, 1, h, h)
    pl_mean = torch.tensor(0.5)
    penalty, new_mean = path_length_penalty(images, ws, pl_mean, decay=0.1, noise=noise)
    y = noise.flatten(1) / h  # 1 / sqrt(H * W)
    grad = (y @ weight.detach().t()).reshape(n, num_ws, w_dim)
    lengths = grad.square().sum(2).mean(1).sqrt()
    expected_mean = 0.5 + 0.1 * (lengths.mean() - 0.5)
    assert new_mean.item() == pytest.approx(expected_mean.item(), rel=1e-5)
    assert not new_mean.requires_grad
    assert penalty.item() == pytest.approx(
        (lengths - expected_mean).square().mean().item(), rel=1e-5
    )
    assert penalty.requires_grad  # create_graph: backpropagates into the generator's weights


def test_path_length_mean_converges_and_penalty_vanishes_for_isometry():
    # An isometric generator (constant length) drives pl_mean to that length and the penalty to 0.
    ws = torch.randn(8, 2, 4, requires_grad=True)
    pl_mean = torch.zeros([])
    for _ in range(400):
        images = ws.reshape(8, 1, 2, 4) * 3.0
        noise = torch.ones(8, 1, 2, 4)  # fixed y: every sample has the same length
        penalty, pl_mean = path_length_penalty(images, ws, pl_mean, decay=0.05, noise=noise)
    assert penalty.item() < 1e-6
    # grad = 3 * y / sqrt(8) per entry -> per layer sum of 4 squares = 4 * 9 / 8; length sqrt(4.5)
    assert pl_mean.item() == pytest.approx(math.sqrt(4.5), rel=1e-4)


def test_lazy_regularization_adam():
    lr, betas = lazy_regularization_adam(0.002, (0.0, 0.99), 16)
    c = 16 / 17
    assert lr == pytest.approx(0.002 * c)
    assert betas == pytest.approx((0.0, 0.99**c))
    assert lazy_regularization_adam(0.002, (0.5, 0.99), 1) == (0.002, (0.5, 0.99))
    assert lazy_regularization_adam(0.002, (0.5, 0.99), None) == (0.002, (0.5, 0.99))


def test_wgan_losses_and_drift_by_hand():
    real = torch.tensor([[1.0], [3.0]])
    fake = torch.tensor([[-2.0], [0.0], [2.0], [4.0]])
    assert d_wgan_loss(real, fake).item() == pytest.approx(1.0 - 2.0)
    assert g_wgan_loss(fake).item() == pytest.approx(-1.0)
    assert epsilon_drift(real, drift=0.001).item() == pytest.approx(0.001 * (1 + 9) / 2)


def test_gradient_penalty_linear_critic():
    # D(x) = <w, x>: the gradient is w everywhere, so GP = lambda * (||w|| - target)^2 / target^2.
    w = torch.zeros(1, 1, 2, 2)
    w[0, 0, 0, 0], w[0, 0, 1, 1] = 3.0, 4.0  # ||w|| = 5
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    critic = lambda x: (x * w).sum(dim=[1, 2, 3]).unsqueeze(1)  # noqa: E731
    assert gradient_penalty(critic, real, fake, gp_lambda=10.0).item() == pytest.approx(10 * 16)
    assert gradient_penalty(critic, real, fake, gp_lambda=1.0, target=5.0).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_gradient_penalty_interpolates_and_trains_only_d():
    # D(x) = sum(x^2): grad 2 xhat; with alpha = 0 xhat = real, alpha = 1 xhat = fake.
    real, fake = torch.full((2, 1, 1, 1), 1.0), torch.full((2, 1, 1, 1), 2.0)
    fake.requires_grad_(True)
    scale = torch.tensor(1.0, requires_grad=True)
    critic = lambda x: (scale * x.square()).sum(dim=[1, 2, 3]).unsqueeze(1)  # noqa: E731
    gp = gradient_penalty(critic, real, fake, gp_lambda=1.0, alpha=torch.tensor([0.0, 1.0]))
    assert gp.item() == pytest.approx(((2 - 1) ** 2 + (4 - 1) ** 2) / 2)
    gp.backward()
    assert fake.grad is None and scale.grad is not None


def test_loss_config_validation():
    with pytest.raises(ValueError, match="style_mixing"):
        LossConfig(style_mixing=1.5)
    with pytest.raises(ValueError, match="r1_interval"):
        LossConfig(r1_interval=0)
    for name in ("ms_weight", "ms_decay_kimg", "info_weight", "info_decay_kimg"):
        with pytest.raises(ValueError, match=f"{name}: must be >= 0, got -1"):
            LossConfig(**{name: -1.0})


def test_mode_seeking_by_hand():
    # pairs (row 0, row 2) and (row 1, row 3); row 4 (odd) is left out
    fake = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [1.0, 3.0], [9.0, 9.0]])
    z = torch.tensor([[0.0], [0.0], [1.0], [3.0], [-7.0]])
    fake.requires_grad_(True)
    # image distance mean(|0-2|, |0-0|, |1-1|, |1-3|) = 1, latent distance mean(1, 3) = 2
    loss = mode_seeking_loss(fake, z, eps=0.0)
    assert loss.item() == pytest.approx(2.0)  # 1 / (1 / 2)
    assert mode_seeking_loss(fake, z).item() == pytest.approx(1 / (0.5 + 1e-5))
    loss.backward()
    # d(1/r)/d fake = -1/r^2 * dr/d fake, r = mean|diff| / 2: each of the 4 entries of the pair
    # differences carries sign(diff) / 4 / 2 -> -4 * sign / 8 = -sign / 2 (0 where diff is 0)
    expected = torch.tensor([[0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [0.0, -0.5], [0.0, 0.0]])
    torch.testing.assert_close(fake.grad, expected)  # descent pushes each pair apart
    with pytest.raises(ValueError, match="at least 2 samples"):
        mode_seeking_loss(fake[:1], z[:1])


def test_decaying_weight_falls_linearly_to_zero():
    assert decaying_weight(2.0, 40.0, 0) == 2.0
    assert decaying_weight(2.0, 40.0, 10_000) == pytest.approx(1.5)
    assert decaying_weight(2.0, 40.0, 40_000) == 0.0
    assert decaying_weight(2.0, 40.0, 90_000) == 0.0  # not negative after the decay
    assert decaying_weight(2.0, 0.0, 90_000) == 2.0  # no decay: constant


def test_regularisers_on_real_stylegan2_networks():
    # End to end on tiny networks: R1 and path length produce finite, differentiable penalties.
    from training.networks.stylegan2 import Discriminator, Generator, mix_styles

    torch.manual_seed(0)
    kw = dict(img_resolution=8, channel_base=64, channel_max=8)
    generator = Generator(z_dim=8, w_dim=8, map_depth=1, **kw)
    discriminator = Discriminator(**kw)
    ws = mix_styles(generator, torch.randn(4, 8), None, prob=0.9)
    images = generator.synthesis(ws)
    penalty, pl_mean = path_length_penalty(images, ws, torch.zeros([]), decay=0.01)
    assert penalty.item() > 0 and pl_mean.item() > 0
    penalty.backward()
    assert generator.synthesis.blocks["8"].conv1.weight.grad.abs().sum() > 0
    reals = torch.randn(4, 3, 8, 8).requires_grad_(True)
    r1 = r1_penalty(discriminator(reals), reals)
    assert r1.item() > 0
    r1.backward()
    assert discriminator.epilogue.fc.weight.grad.abs().sum() > 0
