"""Precision policy (contract 2): reduced precision only in the num_fp16_res highest-resolution
blocks of G and D; mapping, style affines, demodulation, ToRGB / skip image, minibatch-stddev and
the D epilogue in float32; outputs float32 and close to a float32 run."""

from __future__ import annotations

import pytest
import torch

from training.networks import ModelConfig, build_networks, set_precision
from training.networks.layers import Conv2dLayer, MinibatchStdLayer, ReducedPrecisionBlock
from training.networks.progan import DiscriminatorEpilogue as ProDEpilogue
from training.networks.progan import GeneratorBlock as ProGBlock
from training.networks.progan import ToRGB as ProToRGB
from training.networks.stylegan2 import (
    DiscriminatorBlock,
    DiscriminatorEpilogue,
    MappingNetwork,
    SynthesisBlock,
    SynthesisLayer,
    ToRGBLayer,
)

TINY = dict(z_dim=16, w_dim=16, map_depth=2, channel_base=256, channel_max=16)


def _nets(family="stylegan2", num_fp16_res=2, resolution=32, **extra):
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, num_fp16_res=num_fp16_res, **TINY, **extra)
    generator, discriminator, _, _ = build_networks(cfg, resolution, channels=3, c_dim=0)
    return generator, discriminator


def _record_dtypes(module, types):
    """Forward hooks: qualified module name -> (input dtypes, output dtype) of every module of
    the given types."""
    seen: dict[str, tuple] = {}
    handles = []
    for name, m in module.named_modules():
        if isinstance(m, types):

            def hook(mod, args, out, name=name):
                ins = tuple(a.dtype for a in args if torch.is_tensor(a))
                outs = out[0] if isinstance(out, tuple) else out
                seen[name] = (ins, outs.dtype)

            handles.append(m.register_forward_hook(hook))
    return seen, handles


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_stylegan2_reduced_only_in_highest_blocks_and_float32_elsewhere(precision):
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    generator, discriminator = _nets(num_fp16_res=2)  # 32 px: blocks 16 and 32 reduced
    set_precision(generator, precision)
    set_precision(discriminator, precision)
    g_seen, _ = _record_dtypes(generator, (SynthesisLayer, ToRGBLayer, MappingNetwork))
    affine_seen, _ = _record_dtypes(generator, (torch.nn.Module,))
    z = torch.randn(4, 16)
    images = generator(z, None, noise_mode="const")
    assert images.dtype == torch.float32
    assert g_seen["mapping"][1] == torch.float32
    for res in (4, 8):
        assert g_seen[f"synthesis.blocks.{res}.conv1"][1] == torch.float32
    for res in (16, 32):
        assert g_seen[f"synthesis.blocks.{res}.conv0"][1] == low
        assert g_seen[f"synthesis.blocks.{res}.conv1"][1] == low
        assert affine_seen[f"synthesis.blocks.{res}.conv1.affine"][1] == torch.float32  # styles
    for res in (4, 8, 16, 32):  # ToRGB and the skip image: float32 in and out
        assert g_seen[f"synthesis.blocks.{res}.torgb"] == (
            (torch.float32, torch.float32),
            torch.float32,
        )

    d_seen, _ = _record_dtypes(
        discriminator, (DiscriminatorBlock, DiscriminatorEpilogue, MinibatchStdLayer)
    )
    logits = discriminator(images.detach(), None)
    assert logits.dtype == torch.float32
    assert d_seen["blocks.32"][1] == low and d_seen["blocks.16"][1] == low
    assert d_seen["blocks.8"][1] == torch.float32
    assert d_seen["epilogue.mbstd"] == ((torch.float32,), torch.float32)
    assert d_seen["epilogue"][1] == torch.float32


def test_demodulation_is_float32_inside_a_reduced_block():
    # Demodulation coefficients come from float32 styles and weights even in a bf16 block: the
    # sum of I*k*k squared weights would overflow fp16 / lose bits in bf16.
    generator, _ = _nets(num_fp16_res=1)
    set_precision(generator, "bf16")
    calls = []
    original = torch.Tensor.rsqrt

    def spy(x, *args):
        calls.append(x.dtype)
        return original(x, *args)

    torch.Tensor.rsqrt = spy
    try:
        generator(torch.randn(2, 16), None, noise_mode="const")
    finally:
        torch.Tensor.rsqrt = original
    assert calls and set(calls) == {torch.float32}


@pytest.mark.parametrize("family", ["stylegan2", "progan"])
def test_reduced_precision_output_close_to_float32_run(family):
    generator, discriminator = _nets(family=family, num_fp16_res=2)
    z = torch.randn(8, 16)
    with torch.no_grad():
        ref_images = generator(z, None, noise_mode="const")
        ref_logits = discriminator(ref_images, None)
        set_precision(generator, "bf16")
        set_precision(discriminator, "bf16")
        images = generator(z, None, noise_mode="const")
        logits = discriminator(ref_images, None)
    assert images.dtype == logits.dtype == torch.float32
    rel = (images - ref_images).norm() / ref_images.norm()
    assert 0 < rel < 0.03, rel  # bf16 has 8 mantissa bits: different, but close
    rel_d = (logits - ref_logits).norm() / ref_logits.norm()
    assert 0 < rel_d < 0.05, rel_d
    # Back to "no": bit-identical to the float32 run (parameters never left float32).
    set_precision(generator, "no")
    with torch.no_grad():
        assert torch.equal(generator(z, None, noise_mode="const"), ref_images)
    assert all(p.dtype == torch.float32 for p in generator.parameters())


def test_progan_blocks_follow_the_policy():
    generator, discriminator = _nets(family="progan", num_fp16_res=1)  # 32 px: only block 32
    set_precision(generator, "bf16")
    set_precision(discriminator, "bf16")
    seen, _ = _record_dtypes(generator, (ProGBlock, ProToRGB, Conv2dLayer))
    d_seen, _ = _record_dtypes(discriminator, (ReducedPrecisionBlock, ProDEpilogue))
    images = generator(torch.randn(4, 16), None, resolution=32, alpha=0.5)
    assert images.dtype == torch.float32
    assert seen["blocks.32"][1] == torch.bfloat16 and seen["blocks.16"][1] == torch.float32
    assert seen["torgb.32.conv"] == ((torch.float32,), torch.float32)  # ToRGB runs in float32
    logits = discriminator(images, None, resolution=32, alpha=0.5)
    assert logits.dtype == torch.float32
    assert d_seen["blocks.32"][1] == torch.bfloat16 and d_seen["blocks.16"][1] == torch.float32
    assert d_seen["epilogue"][0] == (torch.float32,)


def test_gradients_flow_in_float32_parameters_under_bf16():
    generator, discriminator = _nets(num_fp16_res=4)
    set_precision(generator, "bf16")
    set_precision(discriminator, "bf16")
    logits = discriminator(generator(torch.randn(4, 16), None), None)
    logits.sum().backward()
    for net in (generator, discriminator):
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_set_precision_validation_and_num_fp16_res_zero():
    generator, _ = _nets(num_fp16_res=0)
    set_precision(generator, "bf16")
    blocks = [m for m in generator.modules() if isinstance(m, SynthesisBlock)]
    assert blocks and all(b.compute_dtype == torch.float32 for b in blocks)
    with pytest.raises(ValueError, match="precision"):
        set_precision(generator, "fp8")
    with pytest.raises(ValueError, match="num_fp16_res"):
        ModelConfig(num_fp16_res=-1)
    assert ModelConfig().num_fp16_res == 4 and ModelConfig().conv_clamp == 256
