"""DiffAugment, ADA pipeline and the adaptive-p controller."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from tests.unit.training.host_sync import HostSyncCounter
from training import warp as warp_lib
from training.augment import (
    ADA_OPS,
    AdaController,
    AdaptiveAugment,
    AugmentConfig,
    ada_augment,
    augment,
    diff_augment,
    parse_pipeline,
    warp_centred,
)
from training.losses import r1_penalty
from training.networks import ModelConfig, build_networks
from training.warp import grid_sample


def _images(n=8, c=3, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=gen) * 2 - 1


# ---------------------------------------------------------------------------- DiffAugment


@pytest.mark.parametrize("policy", ["color", "translation", "cutout"])
def test_each_diffaugment_policy_changes_images_and_keeps_shape(policy):
    images = _images()
    out = diff_augment(images, policy, generator=torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert not torch.allclose(out, images)
    assert diff_augment(images, "") is images or torch.equal(diff_augment(images, ""), images)


def test_diffaugment_translation_is_an_integer_shift_with_zero_fill():
    images = _images(n=16, size=16)
    out = diff_augment(images, "translation", generator=torch.Generator().manual_seed(3))
    for x, y in zip(images, out):
        # Find the shift among the admissible ones (|t| <= 2 at 16 px) that explains y exactly.
        found = False
        for ty in range(-2, 3):
            for tx in range(-2, 3):
                ref = torch.zeros_like(x)
                ys, xs = slice(max(-ty, 0), 16 - max(ty, 0)), slice(max(-tx, 0), 16 - max(tx, 0))
                ys_src, xs_src = (
                    slice(max(ty, 0), 16 - max(-ty, 0)),
                    slice(max(tx, 0), 16 - max(-tx, 0)),
                )
                ref[:, ys, xs] = x[:, ys_src, xs_src]
                found = found or torch.equal(ref, y)
        assert found


def test_diffaugment_cutout_zeroes_a_half_size_box():
    images = torch.ones(8, 1, 16, 16)
    out = diff_augment(images, "cutout", generator=torch.Generator().manual_seed(0))
    zeros = (out == 0).sum(dim=[1, 2, 3])
    assert (zeros > 0).all() and (zeros <= 64).all()  # at most 8x8, clipped at the borders
    assert ((out == 0) | (out == 1)).all()


def test_diffaugment_color_matches_hand_computed_brightness():
    # With a seeded generator, the brightness offset is the first U(0,1) draw - 0.5.
    images = torch.zeros(1, 3, 4, 4)
    out = diff_augment(images, "color", generator=torch.Generator().manual_seed(5))
    draws = torch.rand(3, generator=torch.Generator().manual_seed(5))
    # Constant image: saturation and contrast keep it constant at the brightness offset.
    torch.testing.assert_close(out, torch.full_like(images, float(draws[0] - 0.5)))


def test_diffaugment_rejects_unknown_policy():
    with pytest.raises(ValueError, match="policy"):
        diff_augment(_images(), "color,zoom")


# ---------------------------------------------------------------------------- ADA


def test_ada_identity_at_p0_exact():
    images = _images()
    assert ada_augment(images, 0.0, "bgccutout") is images
    cfg = AugmentConfig(mode="ada")
    assert augment(images, cfg, 0.0) is images
    assert augment(images, AugmentConfig(mode="none"), 1.0) is images


def test_ada_p0_tensor_is_numerically_identity():
    # A 0-dim tensor p (compile-friendly path) runs the ops but with every op disabled.
    images = _images()
    out = ada_augment(images, torch.tensor(0.0), "bgc")
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("pipeline", ["b", "g", "c", "cutout", "bgccutout"])
def test_ada_shape_range_grad_at_p1(channels, pipeline):
    images = _images(c=channels).requires_grad_(True)
    out = ada_augment(images, 1.0, pipeline, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, images)
    if pipeline in ("b", "cutout"):  # blits and cutout never leave the input range
        assert out.abs().max() <= 1 + 1e-5
    if pipeline == "g":  # the sym6 low-pass rings a little on white noise (as NVlabs')
        assert out.abs().max() <= 1.5
    (grad,) = torch.autograd.grad(out.square().sum(), images)
    assert grad.abs().sum() > 0


def test_ada_blit_is_exact_permutation():
    # xflip / rot90 / integer translation land on pixel centres: values are only moved.
    images = _images(n=4, size=8)
    out = ada_augment(images, 1.0, "b", generator=torch.Generator().manual_seed(2))
    for x, y in zip(images, out):
        xs = set(x.flatten().tolist())
        assert all(min(abs(v - u) for u in xs) < 1e-5 for v in y.flatten().tolist())


def test_warp_conventions_flip_rotate_translate_reflect():
    # The 1x warp (blit-only pipelines): exact pixel moves.
    warp = functools.partial(warp_centred, antialias=False)
    images = _images(n=1, size=6)
    eye = torch.eye(3)[None]
    flip = eye.clone()
    flip[0, 0, 0] = -1
    torch.testing.assert_close(warp(images, flip), images.flip(-1), atol=1e-5, rtol=0)
    rot = torch.tensor(
        [[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    )  # x -> -y, y -> x (y axis points down)
    torch.testing.assert_close(warp(images, rot), images.rot90(-1, dims=(2, 3)), atol=1e-5, rtol=0)
    shift = eye.clone()
    shift[0, 0, 2] = 2.0  # content moves right by 2; reflect padding fills the left columns
    out = warp(images, shift)
    torch.testing.assert_close(out[..., 2:], images[..., :-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., :2], images[..., [2, 1]], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["ada", "diffaugment"])
def test_double_backward_for_r1_through_augmentation(mode):
    # R1 is taken wrt the un-augmented reals, so its gradient goes through the augmentation twice.
    images = _images(n=2, size=8).requires_grad_(True)
    weight = torch.randn(3, 8, 8, requires_grad=True)
    cfg = AugmentConfig(mode=mode, pipeline="bgccutout")
    augmented = augment(images, cfg, 1.0, generator=torch.Generator().manual_seed(0))
    logits = (augmented * weight).sum(dim=[1, 2, 3])
    (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
    grad.square().sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_ada_probability_controls_fraction_of_changed_samples():
    # P(unchanged) = 0.7^4 * (1 - 0.3 / 2) = 0.204 for 5 color ops at p = 0.3 (lumaflip draws
    # "no flip" half the time). With 8192 samples the standard error is 0.0045: the tolerance
    # tells it apart from lumaflip always flipping (0.7^5 = 0.168) or never (0.7^4 = 0.240).
    images = _images(n=8192, size=4)
    out = ada_augment(images, 0.3, "c", generator=torch.Generator().manual_seed(0))
    unchanged = (out == images).flatten(1).all(dim=1).float().mean().item()
    assert abs(unchanged - 0.7**4 * 0.85) < 0.018


def test_lumaflip_flips_half_of_the_selected_samples_as_a_householder_reflection():
    from training.augment import _color_matrix

    n = 20000
    like = torch.zeros(n)
    C = _color_matrix(n, 3, 0.3, frozenset({"lumaflip"}), like, torch.Generator().manual_seed(1))
    v = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)
    reflection = torch.eye(4) - 2 * torch.outer(v, v)
    flipped = (C - reflection).abs().flatten(1).amax(dim=1) < 1e-6
    identity = (C == torch.eye(4)).flatten(1).all(dim=1)
    assert bool((flipped | identity).all())  # nothing else
    # p / 2 = 0.15 flipped; standard error 0.0025 (0.3 or 0.075 would be far outside).
    assert abs(flipped.float().mean().item() - 0.15) < 0.01
    # A flip maps RGB (r, g, b) to (r, g, b) - 2 * luma: grey g -> -g.
    grey = torch.full([1, 3, 2, 2], 0.4)
    out = (reflection[:3, :3] @ grey.reshape(1, 3, 4)).reshape(1, 3, 2, 2)
    torch.testing.assert_close(out, -grey)


def test_grayscale_images_skip_hue_and_saturation():
    # At p = 1 every op is on; for 1 channel only brightness b, contrast c and lumaflip i apply:
    # out = (1 - 2i) * c * (x + b), with the draws in the pipeline's order (each op draws its
    # value, then its "apply" coin). Hue/saturation draws would come after and are not made.
    images = _images(n=6, c=1)
    out = ada_augment(images, 1.0, "c", generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    b = torch.randn(6, generator=gen) * 0.2
    torch.rand(6, generator=gen)
    c = torch.exp2(torch.randn(6, generator=gen) * 0.5)
    torch.rand(6, generator=gen)
    i = torch.floor(torch.rand(6, generator=gen) * 2)
    expected = ((1 - 2 * i) * c)[:, None, None, None] * (images + b[:, None, None, None])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, images)


def test_parse_pipeline():
    assert parse_pipeline("bgc") == frozenset(ADA_OPS) - {"cutout"}
    assert parse_pipeline("bgccutout") == frozenset(ADA_OPS)
    assert parse_pipeline("bco") == {"xflip", "rotate90", "xint", "cutout"}  # "co" is cutout
    assert parse_pipeline("bcco") == parse_pipeline("bccutout") == parse_pipeline("bc") | {"cutout"}
    with pytest.raises(ValueError, match="not implemented"):
        parse_pipeline("bgcf")
    with pytest.raises(ValueError, match="pipeline"):
        AugmentConfig(pipeline="bgx")


def test_adaptive_augment_module_and_augment_dispatch():
    images = _images()
    module = AdaptiveAugment("bgc")
    gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    torch.testing.assert_close(
        module(images, 0.5, gen_a),
        augment(images, AugmentConfig(mode="fixed", pipeline="bgc"), 0.5, gen_b),
    )
    out = augment(images, AugmentConfig(mode="diffaugment"), 0.0)
    assert not torch.allclose(out, images)  # diffaugment is always on


# ---------------------------------------------------------------------------- controller


def test_controller_p_rises_when_overfitting_and_falls_otherwise():
    ada = AdaController(target=0.6, ada_kimg=1.0, interval=4)
    for _ in range(4):
        ada.accumulate(torch.full((32, 1), 2.0))  # all positive: r_t = 1 > 0.6
    stats = ada.pending()
    assert stats.tolist() == [128.0, 128.0]
    p = ada.update(stats)
    assert p is ada.p and ada.p_value() == pytest.approx(128 / 1000)
    assert ada.pending().tolist() == [0.0, 0.0]  # cleared
    for _ in range(4):
        ada.accumulate(torch.cat([torch.ones(16, 1), -torch.ones(16, 1)]))  # r_t = 0 < 0.6
    ada.update()
    assert ada.p_value() == pytest.approx(0.0, abs=1e-7)
    ada.update()
    assert ada.p_value() == pytest.approx(0.0, abs=1e-7)  # nothing pending: no change
    for _ in range(40):
        ada.accumulate(-torch.ones(32, 1))
    ada.update()
    assert ada.p_value() == 0.0  # clamped at 0


def test_controller_uses_reduced_stats_and_clamps_at_one():
    ada = AdaController(target=0.6, ada_kimg=0.1, interval=1, p=0.95)
    ada.accumulate(torch.ones(4, 1))
    # As if all-reduced over 2 ranks: twice the local sums.
    ada.update(ada.pending() * 2)
    assert ada.p_value() == 1.0 and ada.last_rt == 1.0


def test_controller_state_round_trip():
    ada = AdaController(p=0.25)
    ada.accumulate(torch.tensor([[1.0], [-1.0], [1.0]]))
    state = ada.state_dict()
    assert state == {"p": 0.25, "pending_sum": 1.0, "pending_count": 3.0}
    other = AdaController.from_config(AugmentConfig())
    other.load_state_dict(state)
    assert other.p_value() == 0.25 and other.pending().tolist() == [1.0, 3.0]
    other.update()  # r_t = 1/3 < 0.6: p falls
    expected = torch.tensor(0.25) - torch.tensor(3.0) / 500_000  # float32 arithmetic
    assert other.p_value() == float(expected)


def test_controller_p_is_a_device_tensor_updated_in_place():
    # The single owner of p: a 0-dim float32 tensor; holders of ada.p see every update.
    ada = AdaController(target=0.6, ada_kimg=1.0, p=0.5, device="cpu")
    held = ada.p
    assert torch.is_tensor(held) and held.shape == () and held.dtype == torch.float32
    ada.accumulate(torch.ones(100, 1))
    ada.update()
    assert held is ada.p and float(held) == pytest.approx(0.6)


@pytest.mark.parametrize("pipeline", ["bgccutout", "b"])
def test_no_host_sync_in_augment_and_controller_update(pipeline):
    # The hot loop never waits on the host: no .item()/tolist()/bool()/cpu() and no tensors built
    # from host data (torch.tensor, Kornia's homography helpers) in augment + accumulate + update.
    ada = AdaController(target=0.6, ada_kimg=1.0, p=0.3)
    cfg = AugmentConfig(mode="ada", pipeline=pipeline)
    images = _images(n=4, size=16).requires_grad_(True)
    with HostSyncCounter() as syncs:
        for _ in range(2):
            out = augment(images, cfg, ada.p)
            ada.accumulate(out.mean(dim=[1, 2, 3])[:, None])
            ada.update(ada.pending())
            out.square().sum().backward()
    assert syncs.calls == []


# ---------------------------------------------------------------------------- alias-free warp


def _band_limited(size=32, fmax=0.35, seed=1):
    """Sum of random plane waves below fmax cycles/pixel (Nyquist is 0.5): [1, 1, size, size]."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size) * 1.0, torch.arange(size) * 1.0, indexing="ij")
    image = torch.zeros(size, size)
    for _ in range(20):
        freq, phase, angle = torch.rand(3, generator=gen) * torch.tensor([fmax, 6.28, 6.28])
        image += torch.cos(2 * math.pi * freq * (angle.cos() * xs + angle.sin() * ys) + phase)
    return (image / 5)[None, None]


def _rotation(theta):
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]])


def _high_band_power(images):
    spectrum = torch.fft.fftshift(torch.fft.fft2(images[..., 8:-8, 8:-8]), dim=(-2, -1)).abs() ** 2
    f = torch.fft.fftshift(torch.fft.fftfreq(spectrum.shape[-1]))
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    return spectrum[..., (radius > 0.2) & (radius < 0.4)].sum()


def test_antialiased_warp_keeps_high_frequencies_through_rotate_and_back():
    image = _band_limited()
    there, back = _rotation(0.5), _rotation(-0.5)
    fine = warp_centred(warp_centred(image, there), back)
    coarse = warp_centred(warp_centred(image, there, antialias=False), back, antialias=False)
    core = (..., slice(8, -8), slice(8, -8))  # away from the reflected borders

    def rel_error(x):
        return float((x - image)[core].square().mean() / image[core].square().mean())

    assert rel_error(fine) < 0.03 and rel_error(fine) < rel_error(coarse) / 5
    kept_fine = float(_high_band_power(fine) / _high_band_power(image))
    kept_coarse = float(_high_band_power(coarse) / _high_band_power(image))
    # Measured: ~0.75 vs ~0.38 of the 0.2-0.4 cycles/px band power.
    assert kept_fine > 0.65 and kept_fine > 1.6 * kept_coarse, (kept_fine, kept_coarse)


def test_antialiased_warp_conventions_and_identity():
    image = _band_limited(size=32, fmax=0.2)
    core = (..., slice(6, -6), slice(6, -6))
    eye = torch.eye(3)[None]
    torch.testing.assert_close(warp_centred(image, eye), image, atol=1e-5, rtol=0)
    shift = eye.clone()
    shift[0, 0, 2] = 1.0  # integer shift: exact up to rounding (orthogonal filter pair)
    torch.testing.assert_close(
        warp_centred(image, shift)[..., 1:][core], image[..., :-1][core], atol=1e-5, rtol=0
    )
    flip = eye.clone()
    flip[0, 0, 0] = -1  # sym6 is not linear-phase: flips are close, not exact
    assert (warp_centred(image, flip) - image.flip(-1))[core].abs().max() < 0.06
    quarter = _rotation(math.pi / 2)  # x -> -y, y -> x (y axis points down)
    assert (warp_centred(image, quarter) - image.rot90(-1, dims=(2, 3)))[core].abs().max() < 0.1


def test_ada_pipeline_warps_antialiased_for_general_geometry_and_1x_for_blits():
    """The pipeline, not only ``warp_centred``, takes the 2x path when rotate/scale/aniso/xfrac
    are on, and the exact 1x path for blits alone (same draws, so the same matrices)."""
    from training.augment import _geometric_matrix

    images = _band_limited(size=32).expand(4, 3, 32, 32).contiguous()
    for pipeline, antialias in (("g", True), ("b", False)):
        out = ada_augment(images, 1.0, pipeline, generator=torch.Generator().manual_seed(5))
        G = _geometric_matrix(
            4, 32, 32, 1.0, parse_pipeline(pipeline), images, torch.Generator().manual_seed(5)
        )
        moved = ~(G == torch.eye(3)).flatten(1).all(dim=1)
        assert bool(moved.any())
        expected = torch.where(
            moved[:, None, None, None], warp_centred(images, G, antialias=antialias), images
        )
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
        other = warp_centred(images, G, antialias=not antialias)
        assert (out - other)[moved].abs().max() > 1e-3, pipeline


def test_ada_tensor_p0_is_exactly_identity_and_untouched_samples_pass_through():
    images = _images()
    zero = torch.zeros([])
    for pipeline in ("bgc", "bgccutout", "b"):
        assert torch.equal(ada_augment(images, zero, pipeline), images)
    # At p = 0.5 the samples that drew no op at all come out bit-identical.
    out = ada_augment(_images(n=64), 0.2, "bg", generator=torch.Generator().manual_seed(0))
    same = (out == _images(n=64)).flatten(1).all(dim=1)
    assert 0 < int(same.sum()) < 64


# ---------------------------------------------------------------------------- R1 through ADA


def test_grid_sample_double_backward_matches_finite_differences():
    # R1 through the warp needs d(grad_input)/d(grad_output) of grid_sample; training.warp
    # supplies it for torch releases that lack it (NVlabs' grid_sample_gradfix idea).
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 2, 5, 6, dtype=torch.float64, generator=gen).requires_grad_(True)
    grid = torch.rand(2, 4, 7, 2, dtype=torch.float64, generator=gen) * 2.4 - 1.2
    for padding in ("zeros", "reflection"):
        sample = functools.partial(grid_sample, grid=grid, padding_mode=padding)
        assert torch.autograd.gradgradcheck(sample, (images,))


def test_r1_step_through_ada_with_p_above_zero(monkeypatch):
    # An R1 step as the trainer does it: reals require grad, augment (all op groups, p = 0.6),
    # D, gradient wrt the un-augmented reals with create_graph, backward of the penalty.
    cfg = ModelConfig(z_dim=16, w_dim=16, map_depth=2, channel_base=128, channel_max=16)
    _, discriminator, _, _ = build_networks(cfg, resolution=16, channels=3, c_dim=0)
    aug = AugmentConfig(mode="ada", pipeline="bgccutout")
    p = torch.full([], 0.6)

    def r1_grads():
        discriminator.zero_grad(set_to_none=True)
        reals = _images(n=4, size=16).requires_grad_(True)
        logits = discriminator(augment(reals, aug, p, torch.Generator().manual_seed(3)), None)
        (r1_penalty(logits, reals) * 5.0).backward()
        return [prm.grad.clone() for prm in discriminator.parameters() if prm.grad is not None]

    ours = r1_grads()
    assert ours and all(torch.isfinite(g).all() for g in ours)
    assert sum(float(g.abs().sum()) for g in ours) > 0
    # Same step through torch's own double backward (present in this torch): same gradients.
    monkeypatch.setattr(
        warp_lib,
        "grid_sample",
        lambda x, g, pad="zeros", align_corners=False: torch.nn.functional.grid_sample(
            x, g, mode="bilinear", padding_mode=pad, align_corners=align_corners
        ),
    )
    native = r1_grads()
    assert len(native) == len(ours)
    for a, b in zip(ours, native):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
