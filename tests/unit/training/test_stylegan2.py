"""StyleGAN2 networks: resampling vs a reference upfirdn2d, shapes, truncation, noise, export."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from training.networks import ModelConfig, build_discriminator, build_generator, build_networks
from training.networks.export import load_export, save_export
from training.networks.layers import (
    MinibatchStdLayer,
    conv2d_resample,
    downsample2d,
    join_batches,
    modulated_conv2d,
    setup_filter,
    split_batches,
    upsample2d,
)
from training.networks.stylegan2 import Discriminator, Generator, mix_styles

TINY = dict(z_dim=16, w_dim=16, map_depth=2, channel_base=128, channel_max=16)


def _upfirdn2d_ref(x, f, up=1, down=1, pad=(0, 0), gain=1.0):
    """NVlabs' reference upfirdn2d (zero insertion, pad, true convolution, decimation)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    f = (f * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, f, groups=c)
    return x[:, :, ::down, ::down]


def _onehot(n, c_dim):
    return F.one_hot(torch.arange(n) % c_dim, c_dim).float()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------------------- layers


def test_upsample2d_matches_reference_upfirdn2d():
    x = torch.randn(2, 3, 5, 6)
    f = setup_filter()
    ref = _upfirdn2d_ref(x, f, up=2, pad=(2, 1), gain=4)
    torch.testing.assert_close(upsample2d(x, f), ref)
    # An asymmetric filter catches a missing/extra flip or an off-by-one shift.
    g = torch.outer(torch.tensor([1.0, 2.0, 5.0, 3.0]), torch.tensor([1.0, 2.0, 5.0, 3.0]))
    torch.testing.assert_close(
        upsample2d(x, g / g.sum()), _upfirdn2d_ref(x, g / g.sum(), up=2, pad=(2, 1), gain=4)
    )


def test_downsample2d_matches_reference_upfirdn2d():
    x = torch.randn(2, 3, 8, 8)
    g = torch.outer(torch.tensor([1.0, 2.0, 5.0, 3.0]), torch.tensor([1.0, 2.0, 5.0, 3.0]))
    for f in (setup_filter(), g / g.sum()):
        torch.testing.assert_close(downsample2d(x, f), _upfirdn2d_ref(x, f, down=2, pad=(1, 1)))


def test_conv2d_resample_up_equals_transposed_conv_then_filter():
    # NVlabs' up path: strided transposed 3x3 conv, then FIR (padding 1, gain 4).
    x, w, f = torch.randn(2, 4, 4, 4), torch.randn(5, 4, 3, 3), setup_filter()
    ref = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)  # (H-1)*2+3 = 9 pixels
    ref = _upfirdn2d_ref(ref, f, pad=(1, 1), gain=4)
    out = conv2d_resample(x, w, f, up=2)
    assert out.shape == (2, 5, 8, 8)
    torch.testing.assert_close(out, ref)


def test_conv2d_resample_down_equals_filter_then_strided_conv():
    x, w, f = torch.randn(2, 4, 8, 8), torch.randn(5, 4, 3, 3), setup_filter()
    ref = F.conv2d(_upfirdn2d_ref(x, f, pad=(2, 2)), w, stride=2)
    torch.testing.assert_close(conv2d_resample(x, w, f, down=2), ref)
    w1 = torch.randn(5, 4, 1, 1)
    torch.testing.assert_close(conv2d_resample(x, w1, f, down=2), F.conv2d(downsample2d(x, f), w1))


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_unfused_modconv_agree(up, demodulate):
    x, w, s = torch.randn(3, 4, 4, 4), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    f = setup_filter()
    a = modulated_conv2d(
        x, w, s, up=up, resample_filter=f, demodulate=demodulate, fused_modconv=True
    )
    b = modulated_conv2d(
        x, w, s, up=up, resample_filter=f, demodulate=demodulate, fused_modconv=False
    )
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # Reference for sample 0: explicit per-sample weight (eq. 1-3).
    w0 = w * s[0].reshape(1, -1, 1, 1)
    if demodulate:
        w0 = w0 / (w0.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
    torch.testing.assert_close(a[:1], conv2d_resample(x[:1], w0, f, up=up), rtol=1e-4, atol=1e-5)


def test_demodulation_gives_unit_variance_outputs():
    x = torch.randn(4, 64, 8, 8)
    y = modulated_conv2d(x, torch.randn(32, 64, 3, 3), torch.rand(4, 64) * 3 + 0.1)
    assert 0.7 < y.std().item() < 1.3  # demodulation restores unit variance whatever the styles


def test_minibatch_std_groups_and_indivisible_batch():
    layer = MinibatchStdLayer(group_size=4, num_channels=1)
    x = torch.randn(8, 6, 4, 4)
    y = layer(x)
    assert y.shape == (8, 7, 4, 4)
    torch.testing.assert_close(y[:, :6], x)

    def group_std(batch: torch.Tensor, members: list[int]) -> torch.Tensor:
        return (batch[members].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()

    # Group of sample 0 is {0, 2, 4, 6} (stride n = N / G = 2).
    torch.testing.assert_close(y[0, 6, 0, 0], group_std(x, [0, 2, 4, 6]))
    assert torch.equal(y[0, 6], y[4, 6]) and not torch.equal(y[0, 6], y[1, 6])

    # N = 6, group 4: falls back to group 3, sample 0's group {0, 2, 4} (stride 6 / 3 = 2)
    x6 = torch.randn(6, 6, 4, 4)
    y6 = layer(x6)
    assert y6.shape == (6, 7, 4, 4)
    torch.testing.assert_close(y6[0, 6], torch.full((4, 4), group_std(x6, [0, 2, 4]).item()))
    torch.testing.assert_close(y6[1, 6], torch.full((4, 4), group_std(x6, [1, 3, 5]).item()))
    # N = 5 (prime): group 1 -> stddev sqrt(1e-8)
    y5 = layer(torch.randn(5, 6, 4, 4))
    torch.testing.assert_close(y5[:, 6], torch.full((5, 4, 4), 1e-4))
    # N = 2: the group is clipped to the batch, one group of both samples
    x2 = torch.randn(2, 6, 4, 4)
    y2 = layer(x2)
    torch.testing.assert_close(y2[:, 6], torch.full((2, 4, 4), group_std(x2, [0, 1]).item()))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8, 16])
@pytest.mark.parametrize("c_dim", [0, 3])
def test_joined_real_fake_batch_scores_as_two_forwards(n, c_dim):
    """D on join_batches(real, fake) == D on each alone (mbstd groups stay pure), values and
    gradients, also in channels-last; a plain concatenation of 8 + 8 would mix the groups."""
    torch.manual_seed(n)
    d = Discriminator(
        c_dim=c_dim,
        img_resolution=16,
        img_channels=3,
        mbstd_group=4,
        channel_base=128,
        channel_max=16,
        map_depth=2,
    )
    real, fake = torch.randn(n, 3, 16, 16, requires_grad=True), torch.randn(n, 3, 16, 16)
    c_real = _onehot(n, c_dim) if c_dim else None
    c_fake = _onehot(n, c_dim).roll(1, 0) if c_dim else None
    x = join_batches(real, fake, 4)
    # 1, 2, 6: groups of 1, 2, 3 alone but 2, 4, 4 on the joined batch: no pure layout, refused
    if n in (1, 2, 6):
        assert x is None
        return
    c = join_batches(c_real, c_fake, 4) if c_dim else None
    out_real, out_fake = split_batches(d(x, c), 4)
    ref_real, ref_fake = d(real, c_real), d(fake, c_fake)
    torch.testing.assert_close(out_real, ref_real, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_fake, ref_fake, atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(out_real.sum(), real)
    (ref_grad,) = torch.autograd.grad(ref_real.sum(), real)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4)
    if n == 8:
        mixed = d(torch.cat([real, fake]), None if c is None else torch.cat([c_real, c_fake]))
        assert not torch.allclose(mixed[:n], ref_real, atol=1e-3)
        cl = [t.contiguous(memory_format=torch.channels_last) for t in (real, fake)]
        x_cl = join_batches(*cl, 4)
        assert x_cl.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(split_batches(d(x_cl, c), 4)[1], ref_fake, atol=1e-5, rtol=1e-5)
    # no mbstd: a plain concatenation
    torch.testing.assert_close(join_batches(real, fake, 0), torch.cat([real, fake]))
    assert join_batches(real, fake[:-1], 4) is None


# ---------------------------------------------------------------------------- networks


@pytest.mark.parametrize("resolution", [4, 8, 16, 32, 64])
@pytest.mark.parametrize("c_dim", [0, 3])
@pytest.mark.parametrize("architecture", ["resnet", "orig"])
def test_shapes_at_every_resolution(resolution, c_dim, architecture):
    generator = Generator(c_dim=c_dim, img_resolution=resolution, img_channels=3, **TINY)
    discriminator = Discriminator(
        c_dim=c_dim,
        img_resolution=resolution,
        img_channels=3,
        architecture=architecture,
        channel_base=TINY["channel_base"],
        channel_max=TINY["channel_max"],
        map_depth=2,
    )
    z = torch.randn(4, TINY["z_dim"])
    c = _onehot(4, c_dim) if c_dim else None
    ws = generator.mapping(z, c)
    assert ws.shape == (4, generator.num_ws, TINY["w_dim"])
    assert generator.num_ws == 2 * (resolution.bit_length() - 1) - 2
    images = generator(z, c)
    assert images.shape == (4, 3, resolution, resolution)
    assert torch.isfinite(images).all()
    logits = discriminator(images, c)
    assert logits.shape == (4, 1)
    logits.sum().backward()  # the whole graph is differentiable
    assert generator.mapping.layers[0].weight.grad is not None


def test_skip_discriminator_and_128px_grayscale():
    generator = Generator(
        img_resolution=128,
        img_channels=1,
        z_dim=8,
        w_dim=8,
        map_depth=1,
        channel_base=64,
        channel_max=4,
    )
    images = generator(torch.randn(2, 8))
    assert images.shape == (2, 1, 128, 128)
    for arch in ("resnet", "skip"):
        discriminator = Discriminator(
            img_resolution=128, img_channels=1, architecture=arch, channel_base=64, channel_max=4
        )
        assert discriminator(images).shape == (2, 1)


def test_truncation_psi_zero_gives_w_avg_images():
    generator = Generator(img_resolution=16, **TINY)
    generator.mapping(torch.randn(64, TINY["z_dim"]), None, update_emas=True)
    assert generator.mapping.w_avg.abs().sum() > 0  # update_emas moved w_avg
    z = torch.randn(3, TINY["z_dim"])
    images = generator(z, truncation_psi=0.0, noise_mode="const")
    torch.testing.assert_close(images[0], images[1])
    torch.testing.assert_close(images[0], images[2])
    ws = generator.mapping(z, None, truncation_psi=0.0)
    torch.testing.assert_close(ws, generator.mapping.w_avg.expand_as(ws))
    # cutoff: only the first 2 layers are truncated.
    ws_cut = generator.mapping(z, None, truncation_psi=0.0, truncation_cutoff=2)
    torch.testing.assert_close(ws_cut[:, :2], generator.mapping.w_avg.expand(3, 2, -1))
    torch.testing.assert_close(ws_cut[:, 2:], generator.mapping(z, None)[:, 2:])


def test_w_avg_only_updated_with_update_emas():
    generator = Generator(img_resolution=8, **TINY)
    before = generator.mapping.w_avg.clone()
    generator(torch.randn(4, TINY["z_dim"]))
    assert torch.equal(generator.mapping.w_avg, before)
    generator(torch.randn(4, TINY["z_dim"]), update_emas=True)
    assert not torch.equal(generator.mapping.w_avg, before)


def test_noise_modes():
    generator = Generator(img_resolution=16, **TINY)
    for block in generator.synthesis.blocks.values():  # noise strength starts at 0; make it matter
        for name in ("conv0", "conv1"):
            if hasattr(block, name):
                getattr(block, name).noise_strength.data.fill_(0.5)
    z = torch.randn(2, TINY["z_dim"])
    torch.testing.assert_close(generator(z, noise_mode="const"), generator(z, noise_mode="const"))
    torch.testing.assert_close(generator(z, noise_mode="none"), generator(z, noise_mode="none"))
    assert not torch.allclose(generator(z, noise_mode="random"), generator(z, noise_mode="random"))
    assert not torch.allclose(generator(z, noise_mode="const"), generator(z, noise_mode="none"))
    with pytest.raises(ValueError, match="noise_mode"):
        generator(z, noise_mode="bogus")


def test_fused_and_unfused_generator_agree():
    # The grouped-conv (fused) and the shared-conv (unfused) modconv are the same function.
    generator = Generator(c_dim=2, img_resolution=16, **TINY)
    z, c = torch.randn(3, TINY["z_dim"]), _onehot(3, 2)
    a = generator(z, c, noise_mode="const", fused_modconv=True)
    b = generator(z, c, noise_mode="const", fused_modconv=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(generator.eval()(z, c, noise_mode="const"), b, rtol=1e-4, atol=1e-4)


def test_conditional_generator_depends_on_label_and_needs_it():
    generator = Generator(c_dim=4, img_resolution=8, **TINY)
    discriminator = Discriminator(
        c_dim=4, img_resolution=8, channel_base=128, channel_max=16, map_depth=2
    )
    z = torch.randn(1, TINY["z_dim"]).repeat(2, 1)
    c = _onehot(2, 4)
    images = generator(z, c, noise_mode="const")
    assert not torch.allclose(images[0], images[1])
    logits = discriminator(images[:1].repeat(2, 1, 1, 1), c)
    assert logits[0] != logits[1]
    with pytest.raises(ValueError, match="c_dim"):
        generator(z, None)


def test_mix_styles_mixes_a_suffix_of_layers():
    generator = Generator(img_resolution=32, **TINY)
    z = torch.randn(4, TINY["z_dim"])
    ws_plain = generator.mapping(z, None)
    torch.testing.assert_close(mix_styles(generator, z, None, prob=0.0), ws_plain)
    ws = mix_styles(generator, z, None, prob=1.0)
    same = (ws == ws_plain).all(dim=2).all(dim=0)  # [num_ws]
    cutoff = int(same.long().sum())
    assert 1 <= cutoff < generator.num_ws
    assert same[:cutoff].all() and not same[cutoff:].any()


def test_state_dict_is_tensors_with_w_avg_and_noise_buffers():
    generator = Generator(img_resolution=16, **TINY)
    state = generator.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "mapping.w_avg" in state
    assert any(k.endswith("noise_const") for k in state)
    assert not any(k.endswith("resample_filter") for k in state)  # derived, not saved


def test_kwargs_json_round_trip_via_build_networks():
    cfg = ModelConfig(conditional=True, d_architecture="orig", conv_clamp=None, **TINY)
    generator, discriminator, g_kwargs, d_kwargs = build_networks(cfg, 16, 3, 5)
    g_kwargs2, d_kwargs2 = json.loads(json.dumps(g_kwargs)), json.loads(json.dumps(d_kwargs))
    assert g_kwargs2 == g_kwargs and d_kwargs2 == d_kwargs
    generator2 = build_generator("stylegan2", g_kwargs2)
    discriminator2 = build_discriminator("stylegan2", d_kwargs2)
    generator2.load_state_dict(generator.state_dict(), strict=True)
    discriminator2.load_state_dict(discriminator.state_dict(), strict=True)
    z, c = torch.randn(2, TINY["z_dim"]), _onehot(2, 5)
    torch.testing.assert_close(
        generator2(z, c, noise_mode="const"), generator(z, c, noise_mode="const")
    )
    assert (
        generator.c_dim == 5 and discriminator.c_dim == 5 and discriminator.architecture == "orig"
    )
    # Unconditional config ignores the dataset's classes; channels follow channel_base // r.
    _, _, g_kwargs, _ = build_networks(ModelConfig(**TINY), 16, 1, 5)
    assert g_kwargs["c_dim"] == 0 and g_kwargs["img_channels"] == 1
    with pytest.raises(ValueError, match="d_architecture"):
        ModelConfig(d_architecture="nope")


def test_export_round_trip_gives_identical_outputs(tmp_path):
    cfg = ModelConfig(conditional=True, **TINY)
    generator, _, g_kwargs, _ = build_networks(cfg, 16, 3, 3)
    generator.mapping(torch.randn(8, TINY["z_dim"]), _onehot(8, 3), update_emas=True)
    generator.eval()
    save_export(tmp_path / "export", generator, family="stylegan2", kwargs=g_kwargs)
    loaded, config = load_export(tmp_path / "export")
    assert config["family"] == "stylegan2" and config["c_dim"] == 3
    z, c = torch.randn(3, TINY["z_dim"]), _onehot(3, 3)
    for psi in (1.0, 0.5):
        torch.testing.assert_close(
            loaded(z, c, truncation_psi=psi, noise_mode="const"),
            generator(z, c, truncation_psi=psi, noise_mode="const"),
            rtol=0,
            atol=0,
        )


def test_conv_clamp_bounds_activations():
    generator = Generator(img_resolution=8, conv_clamp=1e-3, **TINY)
    images = generator(torch.randn(2, TINY["z_dim"]))
    # Each ToRGB output is clamped to 1e-3; the 4x4 one is upsampled (FIR gain keeps it <= 1e-3).
    assert images.abs().max() <= 2e-3 + 1e-6


def test_autocast_bf16_forward_backward_and_w_avg_update():
    # The mapping (and demodulation) stay float32 under autocast; the w_avg lerp must not fail.
    generator = Generator(c_dim=3, img_resolution=8, conv_clamp=256.0, **TINY)
    discriminator = Discriminator(
        c_dim=3, img_resolution=8, channel_base=128, channel_max=16, conv_clamp=256.0
    )
    z, c = torch.randn(4, TINY["z_dim"]), _onehot(4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ws = mix_styles(generator, z, c, prob=0.9, update_emas=True)
        images = generator.synthesis(ws)
        logits = discriminator(images, c)
    assert ws.dtype == torch.float32 and generator.mapping.w_avg.dtype == torch.float32
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    logits.float().sum().backward()
    assert torch.isfinite(generator.mapping.layers[0].weight.grad).all()


def test_torch_compile_fullgraph_no_graph_breaks():
    # fullgraph=True fails on any graph break (data-dependent Python control flow in forward).
    generator = Generator(c_dim=2, img_resolution=8, **TINY)
    discriminator = Discriminator(
        c_dim=2, img_resolution=8, channel_base=128, channel_max=16, map_depth=2
    )
    z, c = torch.randn(3, TINY["z_dim"]), _onehot(3, 2)
    compiled_g = torch.compile(generator, backend="eager", fullgraph=True)
    compiled_d = torch.compile(discriminator, backend="eager", fullgraph=True)
    images = compiled_g(z, c, truncation_psi=0.7, noise_mode="const")
    torch.testing.assert_close(images, generator(z, c, truncation_psi=0.7, noise_mode="const"))
    torch.testing.assert_close(compiled_d(images, c), discriminator(images, c))


def test_synthesis_traces_and_exports_to_onnx_with_dynamic_batch(tmp_path):
    # deploy/ exports G with the unfused modconv (the fused one bakes the batch into reshapes).
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    generator = Generator(img_resolution=8, **TINY).eval().requires_grad_(False)

    class Sample(torch.nn.Module):
        def forward(self, z):
            ws = generator.mapping(z, None, truncation_psi=0.7)
            return generator.synthesis(ws, noise_mode="const", fused_modconv=False)

    z2, z5 = torch.randn(2, TINY["z_dim"]), torch.randn(5, TINY["z_dim"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about every baked Python int/bool
        traced = torch.jit.trace(Sample(), (z2,), check_trace=False)
    torch.testing.assert_close(traced(z5), Sample()(z5))
    path = str(tmp_path / "g.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Sample(),
            (z2,),
            path,
            input_names=["z"],
            output_names=["images"],
            dynamic_axes={"z": {0: "n"}, "images": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    (out,) = ort.InferenceSession(path).run(None, {"z": z5.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), Sample()(z5), rtol=1e-4, atol=1e-4)
