"""Progressive GAN (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality,
Stability, and Variation"; reference code tkarras/progressive_growing_of_gans ``networks.py``).

Generator: z -> pixel norm -> 4x4 block (dense + 3x3 conv) -> per resolution a block of
nearest-neighbour 2x upsample + two 3x3 convs -> 1x1 ToRGB. Every conv is followed by bias,
leaky ReLU 0.2 and pixel-wise feature normalisation (sec. 4.2); all layers use equalized learning
rate (sec. 4.1).

Discriminator: 1x1 FromRGB -> per resolution two 3x3 convs + 2x2 average pool -> 4x4 epilogue
with the minibatch standard deviation layer (sec. 3), a 3x3 conv and two dense layers.

Growing (sec. 2, fig. 2): every layer of every resolution exists from construction (checkpoints
and optimizer states keep their shape), and ``forward`` takes the current ``resolution`` and fade
``alpha`` as arguments; the schedule in ``training/growth.py`` computes them from images seen.
While a resolution fades in, G outputs ``lerp(upsample(torgb_prev(x_prev)), torgb_new(x_new),
alpha)`` and D blends ``fromrgb_prev(avgpool(img))`` with ``block_new(fromrgb_new(img))`` the same
way. Layers above ``resolution`` are simply not run.

We use the reference's non-fused variant (``fused_scale=False``): upsample -> conv and conv ->
pool, which is what the fused transposed/strided convs compute up to the position of the bias.

Conditioning: G concatenates a (normalised) embedding of the one-hot label to the normalised z,
as the paper's conditional variant feeds labels with the latents; D uses the projection
discriminator of StyleGAN2-ADA (logits = sum(x * cmap) / sqrt(cmap_dim)).

Precision (the ProGAN equivalent of StyleGAN2's ``num_fp16_res``): the doubling blocks of G and
the halving blocks of D at the ``num_fp16_res`` highest resolutions compute their convs in the
dtype :func:`~training.networks.layers.set_precision` picks; pixel norm is taken in float32 (a
mean of squares overflows fp16), and the 4x4 input block, ToRGB/FromRGB, the fade-in blend,
minibatch-stddev and the D epilogue stay float32. There is no conv clamp in ProGAN.

Everything here is a pure ``nn.Module``: no devices, I/O, growth state or ``.backward()``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    MinibatchStdLayer,
    ReducedPrecisionBlock,
    normalize_2nd_moment,
    reduced_precision_threshold,
)

NOISE_MODES = ("random", "const", "none")


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps of the layers at ``resolution``: min(channel_base // resolution, channel_max).

    (The reference's ``nf(log2(r) - 1)`` with ``fmap_base`` equals this with channel_base =
    2 * fmap_base: the paper's 512 ... 16 maps for 4 ... 1024 px are channel_base 16384.)
    """
    return max(1, min(channel_base // resolution, channel_max))


def _check_resolution(resolution: int | None, resolutions: list[int]) -> int:
    """-> the matching entry of ``resolutions`` (a plain Python int even when torch.compile
    traces ``resolution`` as a symbolic int, so module lookups by ``str(r)`` stay static)."""
    if resolution is None:
        return resolutions[-1]
    for r in resolutions:
        if r == resolution:
            return r
    raise ValueError(
        f"resolution: must be a power of two in 4..{resolutions[-1]}, got {resolution}"
    )


def _check_alpha(alpha: float | torch.Tensor) -> None:
    # A tensor alpha is not checked: reading its value would force a device sync (and a graph
    # break under torch.compile). Passing alpha as a 0-dim tensor also avoids a recompile per value.
    if not isinstance(alpha, torch.Tensor) and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: must be in [0, 1], got {alpha}")


def _fades(resolution: int, alpha: float | torch.Tensor) -> bool:
    """Whether the previous resolution's path must be run: not at 4x4, nor at a float alpha 1."""
    if resolution <= 4:
        return False
    return isinstance(alpha, torch.Tensor) or alpha < 1.0


def _lerp(a: torch.Tensor, b: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """a + (b - a) * alpha: a at alpha 0, b at alpha 1 (alpha a float or a 0-dim tensor)."""
    return a + (b - a) * alpha


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling (reference ``upscale2d``). [N, C, H, W] -> [N, C, 2H, 2W]."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample_box(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling (reference ``downscale2d``). [N, C, H, W] -> [N, C, H/2, W/2]."""
    return F.avg_pool2d(x, kernel_size=2)


# --------------------------------------------------------------------------------------------
# Generator


class GeneratorInput(nn.Module):
    """The 4x4 block: dense layer to a 4x4 map, then a 3x3 conv (reference ``G_paper`` res 2).

    x: [N, in_features] (normalised latent [+ label embedding]) -> [N, channels, 4, 4].
    """

    def __init__(self, in_features: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.dense = FullyConnectedLayer(in_features, channels * 16, activation="lrelu")
        self.conv = Conv2dLayer(channels, channels, kernel_size=3, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(self.dense(x).reshape(-1, self.channels, 4, 4))
        return normalize_2nd_moment(self.conv(x))


def _pixel_norm(x: torch.Tensor) -> torch.Tensor:
    # In float32 whatever the block's dtype (a no-op cast for float32 blocks).
    return normalize_2nd_moment(x.float()).to(x.dtype)


class GeneratorBlock(ReducedPrecisionBlock):
    """Doubling block: nearest 2x upsample, two 3x3 convs, each with lrelu + pixel norm.

    x: [N, in_channels, H, W] -> [N, out_channels, 2H, 2W] in ``compute_dtype``.
    """

    def __init__(self, in_channels: int, out_channels: int, reduced: bool = False) -> None:
        super().__init__()
        self.reduced = reduced
        self.conv0 = Conv2dLayer(in_channels, out_channels, kernel_size=3, activation="lrelu")
        self.conv1 = Conv2dLayer(out_channels, out_channels, kernel_size=3, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pixel_norm(self.conv0(upsample_nearest(x.to(self.compute_dtype))))
        return _pixel_norm(self.conv1(x))


class ToRGB(nn.Module):
    """1x1 linear conv to image channels (gain 1). [N, C, H, W] -> [N, img_channels, H, W]."""

    def __init__(self, in_channels: int, img_channels: int) -> None:
        super().__init__()
        self.conv = Conv2dLayer(in_channels, img_channels, kernel_size=1, activation="linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float())


class Generator(nn.Module):
    """ProGAN generator. z: [N, z_dim], c: [N, c_dim] one-hot (or None when c_dim is 0)
    -> images [N, img_channels, resolution, resolution] in about [-1, 1] (no output tanh, as the
    reference)."""

    def __init__(
        self,
        z_dim: int,  # latent dimensionality
        c_dim: int,  # label dimensionality (0: unconditional; c is then ignored)
        img_resolution: int,  # final output resolution (power of two >= 4)
        img_channels: int,  # output colour channels (1 or 3)
        channel_base: int = 16384,  # feature maps at resolution r: min(channel_base // r, channel_max)
        channel_max: int = 512,  # upper bound of feature maps per layer
        num_fp16_res: int = 0,  # highest-resolution blocks that may run in reduced precision
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution: must be a power of two >= 4, got {img_resolution}")
        threshold = reduced_precision_threshold(img_resolution, num_fp16_res)
        self.z_dim, self.c_dim = z_dim, c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        ch = {r: channels_at(r, channel_base, channel_max) for r in self.resolutions}
        # Class conditioning: a label embedding of z_dim features, normalised like z so that
        # both halves of the input carry equal weight.
        self.embed = FullyConnectedLayer(c_dim, z_dim) if c_dim > 0 else None
        in_features = z_dim + (z_dim if c_dim > 0 else 0)
        blocks: dict[str, nn.Module] = {"4": GeneratorInput(in_features, ch[4])}
        for r in self.resolutions[1:]:
            blocks[str(r)] = GeneratorBlock(ch[r // 2], ch[r], reduced=r >= threshold)
        self.blocks = nn.ModuleDict(blocks)
        self.torgb = nn.ModuleDict({str(r): ToRGB(ch[r], img_channels) for r in self.resolutions})

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "random",
        resolution: int | None = None,
        alpha: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """z: [N, z_dim]; c: [N, c_dim] one-hot (required when c_dim > 0, ignored otherwise).

        truncation_psi: z is pixel-normalised onto the sphere of radius sqrt(z_dim) and then
            scaled by psi toward 0, its mean (psi 1: no truncation; psi 0: one image per class,
            the zero latent's). Pixel norm after the first layer makes the network nearly scale
            invariant, so the effect comes through the learned biases and is milder than
            StyleGAN's W-space truncation.
        noise_mode: ignored (ProGAN has no noise inputs); accepted for a uniform API.
        resolution: output side length, a power of two in 4..img_resolution (None: full).
        alpha: fade-in weight of the newest block, in [0, 1] (1: fully faded in; ignored at 4x4).
            A float or a 0-dim tensor (a tensor avoids a torch.compile recompile per value).
        -> images [N, img_channels, resolution, resolution].
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(
                f"noise_mode: must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}"
            )
        resolution = _check_resolution(resolution, self.resolutions)
        _check_alpha(alpha)
        x = normalize_2nd_moment(z)
        if truncation_psi != 1:
            x = x * truncation_psi
        if self.embed is not None:
            if c is None:
                raise ValueError(
                    f"c: the generator is conditional (c_dim {self.c_dim}); pass one-hot labels"
                )
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.to(x.dtype)))], dim=1)
        x = self.blocks["4"](x)
        x_prev = x
        for r in self.resolutions[1:]:
            if r > resolution:
                break
            x_prev, x = x, self.blocks[str(r)](x)
        images = self.torgb[str(resolution)](x)
        if _fades(resolution, alpha):
            images_prev = upsample_nearest(self.torgb[str(resolution // 2)](x_prev))
            images = _lerp(images_prev, images, alpha)
        return images


# --------------------------------------------------------------------------------------------
# Discriminator


class FromRGB(nn.Module):
    """1x1 conv + lrelu from image channels. [N, img_channels, H, W] -> [N, channels, H, W]."""

    def __init__(self, img_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = Conv2dLayer(img_channels, channels, kernel_size=1, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float())


class DiscriminatorBlock(ReducedPrecisionBlock):
    """Halving block: two 3x3 convs + lrelu, then 2x2 average pooling.

    x: [N, in_channels, H, W] -> [N, out_channels, H/2, W/2] in ``compute_dtype``.
    """

    def __init__(self, in_channels: int, out_channels: int, reduced: bool = False) -> None:
        super().__init__()
        self.reduced = reduced
        self.conv0 = Conv2dLayer(in_channels, in_channels, kernel_size=3, activation="lrelu")
        self.conv1 = Conv2dLayer(in_channels, out_channels, kernel_size=3, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample_box(self.conv1(self.conv0(x.to(self.compute_dtype))))


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: minibatch stddev, 3x3 conv, dense, output dense (+ projection).

    x: [N, channels, 4, 4], cmap: [N, cmap_dim] or None -> logits [N, 1].
    """

    def __init__(
        self,
        channels: int,  # input and hidden feature maps
        cmap_dim: int,  # projection dimensionality (0: unconditional, the output is one logit)
        mbstd_group: int,  # minibatch-stddev group size (0: no mbstd layer)
        mbstd_channels: int,  # minibatch-stddev feature channels
    ) -> None:
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group, mbstd_channels) if mbstd_group > 0 else None
        extra = mbstd_channels if self.mbstd is not None else 0
        self.conv = Conv2dLayer(channels + extra, channels, kernel_size=3, activation="lrelu")
        self.fc = FullyConnectedLayer(channels * 16, channels, activation="lrelu")
        self.out = FullyConnectedLayer(channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        x = x.float()
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim > 0:
            # Projection discriminator (Miyato & Koyama 2018, as in StyleGAN2-ADA's D epilogue).
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


class Discriminator(nn.Module):
    """ProGAN discriminator. images: [N, img_channels, R, R] at the current resolution R,
    c: [N, c_dim] one-hot (or None when c_dim is 0) -> logits [N, 1]."""

    def __init__(
        self,
        c_dim: int,  # label dimensionality (0: unconditional; c is then ignored)
        img_resolution: int,  # final input resolution (power of two >= 4)
        img_channels: int,  # input colour channels
        channel_base: int = 16384,  # feature maps at resolution r: min(channel_base // r, channel_max)
        channel_max: int = 512,  # upper bound of feature maps per layer
        mbstd_group: int = 4,  # minibatch-stddev group, clipped to the batch (0: no mbstd layer)
        mbstd_channels: int = 1,  # minibatch-stddev feature channels
        num_fp16_res: int = 0,  # highest-resolution blocks that may run in reduced precision
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution: must be a power of two >= 4, got {img_resolution}")
        threshold = reduced_precision_threshold(img_resolution, num_fp16_res)
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        ch = {r: channels_at(r, channel_base, channel_max) for r in self.resolutions}
        cmap_dim = ch[4] if c_dim > 0 else 0
        self.embed = FullyConnectedLayer(c_dim, cmap_dim) if c_dim > 0 else None
        self.fromrgb = nn.ModuleDict(
            {str(r): FromRGB(img_channels, ch[r]) for r in self.resolutions}
        )
        self.blocks = nn.ModuleDict(
            {
                str(r): DiscriminatorBlock(ch[r], ch[r // 2], reduced=r >= threshold)
                for r in self.resolutions[1:]
            }
        )
        self.epilogue = DiscriminatorEpilogue(ch[4], cmap_dim, mbstd_group, mbstd_channels)

    def forward(
        self,
        images: torch.Tensor,
        c: torch.Tensor | None = None,
        resolution: int | None = None,
        alpha: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """images: [N, img_channels, R, R]; c: [N, c_dim] one-hot (required when c_dim > 0).

        resolution: R, a power of two in 4..img_resolution (None: the images' size).
        alpha: fade-in weight of the newest block (see ``Generator.forward``).
        -> logits [N, 1].
        """
        if resolution is None:
            resolution = images.shape[-1]
        resolution = _check_resolution(resolution, self.resolutions)
        if tuple(images.shape[-2:]) != (resolution, resolution):
            raise ValueError(
                f"images: expected {resolution}x{resolution} at resolution {resolution}, "
                f"got {tuple(images.shape)}"
            )
        _check_alpha(alpha)
        cmap = None
        if self.embed is not None:
            if c is None:
                raise ValueError(
                    f"c: the discriminator is conditional (c_dim {self.c_dim}); pass one-hot labels"
                )
            cmap = normalize_2nd_moment(self.embed(c.to(images.dtype)))
        x = self.fromrgb[str(resolution)](images)
        if resolution > 4:
            x = self.blocks[str(resolution)](x)
            if _fades(resolution, alpha):
                x_prev = self.fromrgb[str(resolution // 2)](downsample_box(images))
                x = _lerp(x_prev, x, alpha)
        for r in reversed(self.resolutions[1:]):
            if r < resolution:
                x = self.blocks[str(r)](x)
        return self.epilogue(x, cmap)


# --------------------------------------------------------------------------------------------
# Constructor arguments from the run config (stored in the export's generator.json)


def generator_kwargs(model_cfg: ModelConfig, resolution: int, channels: int, c_dim: int) -> dict:
    """-> plain JSON-able ``Generator`` kwargs (c_dim is 0 unless ``model.conditional``)."""
    return {
        "z_dim": int(model_cfg.z_dim),
        "c_dim": int(c_dim) if model_cfg.conditional else 0,
        "img_resolution": int(resolution),
        "img_channels": int(channels),
        "channel_base": int(model_cfg.channel_base),
        "channel_max": int(model_cfg.channel_max),
        "num_fp16_res": int(model_cfg.num_fp16_res),
    }


def discriminator_kwargs(
    model_cfg: ModelConfig, resolution: int, channels: int, c_dim: int
) -> dict:
    """-> plain JSON-able ``Discriminator`` kwargs (c_dim is 0 unless ``model.conditional``)."""
    return {
        "c_dim": int(c_dim) if model_cfg.conditional else 0,
        "img_resolution": int(resolution),
        "img_channels": int(channels),
        "channel_base": int(model_cfg.channel_base),
        "channel_max": int(model_cfg.channel_max),
        "mbstd_group": int(model_cfg.mbstd_group),
        "mbstd_channels": int(model_cfg.mbstd_channels),
        "num_fp16_res": int(model_cfg.num_fp16_res),
    }


__all__ = [
    "Discriminator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "FromRGB",
    "Generator",
    "GeneratorBlock",
    "GeneratorInput",
    "ToRGB",
    "channels_at",
    "discriminator_kwargs",
    "downsample_box",
    "generator_kwargs",
    "upsample_nearest",
]
