"""StyleGAN2 generator and discriminator (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"; configuration "F" of StyleGAN2-ADA: skip G, residual D), in pure PyTorch.

Generator: z [N, z_dim] (+ one-hot c) -> MappingNetwork -> ws [N, num_ws, w_dim] ->
SynthesisNetwork (learned 4x4 constant, two modulated 3x3 convs per resolution, per-layer noise,
skip ToRGB outputs upsampled with a [1,3,3,1] FIR filter and summed) -> images [N, C, H, W].
num_ws = 2 * log2(resolution) - 2.

Discriminator: images -> FromRGB -> residual blocks (or plain "orig" blocks, or "skip" FromRGB at
every resolution) down to 4x4 -> minibatch-stddev -> conv -> fc -> out; conditional through a
projection (Miyato & Koyama 2018): logits = <out, cmap(c)> / sqrt(cmap_dim).

InfoGAN (Chen et al. 2016; ``latent_classes`` / ``q_dim``): G embeds a categorical code read from
its own z (:func:`latent_code`), D adds a Q head on its last features: [N, 1 + q_dim] outputs.

Style mixing regularisation (StyleGAN sec. 3.1) lives in :func:`mix_styles`, called by the loss /
trainer; the networks themselves are pure functions of their inputs (plus the ``w_avg`` buffer,
updated only when ``update_emas=True``).

Code: the generator in ``stylegan2_generator.py``, the discriminator in
``stylegan2_discriminator.py``; this module is the family's entry point (the names of both and
the constructor arguments built from ``ModelConfig``).
"""

from __future__ import annotations

from typing import Any

from .config import ModelConfig
from .stylegan2_discriminator import Discriminator, DiscriminatorBlock, DiscriminatorEpilogue
from .stylegan2_generator import (
    Generator,
    MappingNetwork,
    NoiseMode,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
    _check_resolution,
    latent_code,
    mix_styles,
)

D_MAP_DEPTH = 8  # layers of the discriminator's label mapping (conditional D), as NVlabs


# --------------------------------------------------------------------------------------------
# Construction from ModelConfig (JSON-able kwargs, stored in the export)


def generator_kwargs(
    model_cfg: ModelConfig, resolution: int, channels: int, c_dim: int
) -> dict[str, Any]:
    """Plain JSON-able ``Generator`` kwargs. ``c_dim`` is ignored unless ``model_cfg.conditional``."""
    _check_resolution(resolution)
    return {
        "z_dim": model_cfg.z_dim,
        "c_dim": int(c_dim) if model_cfg.conditional else 0,
        "w_dim": model_cfg.w_dim,
        "img_resolution": int(resolution),
        "img_channels": int(channels),
        "map_depth": model_cfg.map_depth,
        "map_lr_mult": float(model_cfg.map_lr_mult),
        "w_avg_beta": float(model_cfg.w_avg_beta),
        "channel_base": model_cfg.channel_base,
        "channel_max": model_cfg.channel_max,
        "conv_clamp": None if model_cfg.conv_clamp is None else float(model_cfg.conv_clamp),
        "num_fp16_res": int(model_cfg.num_fp16_res),
        "latent_classes": int(model_cfg.latent_classes),
    }


def discriminator_kwargs(
    model_cfg: ModelConfig, resolution: int, channels: int, c_dim: int
) -> dict[str, Any]:
    """Plain JSON-able ``Discriminator`` kwargs. ``c_dim`` is ignored unless conditional;
    ``architecture`` comes from ``model_cfg.d_architecture``."""
    _check_resolution(resolution)
    return {
        "c_dim": int(c_dim) if model_cfg.conditional else 0,
        "img_resolution": int(resolution),
        "img_channels": int(channels),
        "architecture": model_cfg.d_architecture,
        "channel_base": model_cfg.channel_base,
        "channel_max": model_cfg.channel_max,
        "conv_clamp": None if model_cfg.conv_clamp is None else float(model_cfg.conv_clamp),
        "mbstd_group": model_cfg.mbstd_group,
        "mbstd_channels": model_cfg.mbstd_channels,
        # NVlabs keeps D's label mapping at its default 8 layers whatever G's depth (``--cfg`` only
        # sets G's); it is a stack of cmap_dim-wide FC layers, negligible next to the convs.
        "map_depth": D_MAP_DEPTH,
        "map_lr_mult": float(model_cfg.map_lr_mult),
        "num_fp16_res": int(model_cfg.num_fp16_res),
        "q_dim": int(model_cfg.latent_classes),
    }


__all__ = [
    "D_MAP_DEPTH",
    "Discriminator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "Generator",
    "MappingNetwork",
    "NoiseMode",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "discriminator_kwargs",
    "generator_kwargs",
    "latent_code",
    "mix_styles",
]
