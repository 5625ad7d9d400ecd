"""StyleGAN2 discriminator (Karras et al. 2020; StyleGAN2-ADA's resnet / orig / skip variants).
The family's entry point is :mod:`training.networks.stylegan2`.

images -> FromRGB -> residual blocks (or plain "orig" blocks, or "skip" FromRGB at every
resolution) down to 4x4 -> minibatch-stddev -> conv -> fc -> out; conditional through a
projection (Miyato & Koyama 2018): logits = <out, cmap(c)> / sqrt(cmap_dim).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    MinibatchStdLayer,
    ReducedPrecisionBlock,
    downsample2d,
    reduced_precision_threshold,
    setup_filter,
)
from .stylegan2_generator import RESAMPLE_FILTER, MappingNetwork, _channels, _check_resolution


class DiscriminatorBlock(ReducedPrecisionBlock):
    """One resolution of D: two 3x3 convs, the second downsampling by 2.

    (x [N, tmp, r, r] or None, img [N, C, r, r] or None) -> (x [N, out, r/2, r/2], img or None).
    resnet: x = (skip(x) + conv1(conv0(x))) * sqrt(1/2) (unit variance of the sum);
    orig: plain stack; skip: FromRGB of the downsampled image added at every resolution.
    x is computed in ``compute_dtype``; the (skip) image stays float32.
    """

    def __init__(
        self,
        in_channels: int,  # 0: first block, reads the image through FromRGB
        tmp_channels: int,
        out_channels: int,
        img_channels: int,
        architecture: str = "resnet",  # resnet | orig | skip
        conv_clamp: float | None = None,
        reduced: bool = False,  # may run in reduced precision (see set_precision)
    ) -> None:
        super().__init__()
        self.in_channels, self.architecture, self.reduced = in_channels, architecture, reduced
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(
                img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp
            )
        self.conv0 = Conv2dLayer(
            tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp
        )
        self.conv1 = Conv2dLayer(
            tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER), persistent=False)

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = self.compute_dtype
        x = x.to(dtype) if x is not None else None
        if self.in_channels == 0 or self.architecture == "skip":
            y = self.fromrgb(img.to(dtype))
            x = y if x is None else x + y
            if self.architecture == "skip":
                img = downsample2d(img, self.resample_filter)
            else:
                img = None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
            return y + x, img
        return self.conv1(self.conv0(x)), img


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: (FromRGB) -> minibatch-stddev -> 3x3 conv -> fc -> out (-> projection).

    x [N, C, 4, 4] (or None at resolution 4), img, cmap [N, cmap_dim] or None -> logits [N, 1].
    Always float32 (minibatch-stddev and the dense layers need the range and precision).
    """

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,  # 0: unconditional
        img_channels: int,
        use_fromrgb: bool,  # skip architecture or a 4x4 D (no blocks before the epilogue)
        mbstd_group: int = 4,  # 0: no minibatch-stddev layer
        mbstd_channels: int = 1,
        conv_clamp: float | None = None,
        q_dim: int = 0,  # InfoGAN Q head: code logits beside the score (0: none)
    ) -> None:
        super().__init__()
        self.cmap_dim, self.q_dim = cmap_dim, q_dim
        if use_fromrgb:
            self.fromrgb = Conv2dLayer(
                img_channels, in_channels, 1, activation="lrelu", conv_clamp=conv_clamp
            )
        self.mbstd = (
            MinibatchStdLayer(mbstd_group, mbstd_channels)
            if mbstd_group > 0 and mbstd_channels > 0
            else None
        )
        extra = mbstd_channels if self.mbstd is not None else 0
        self.conv = Conv2dLayer(
            in_channels + extra, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)
        if q_dim > 0:
            self.q = FullyConnectedLayer(in_channels, q_dim)

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, cmap: torch.Tensor | None
    ) -> torch.Tensor:
        x = x.float() if x is not None else None
        if hasattr(self, "fromrgb"):
            y = self.fromrgb(img.float())
            x = y if x is None else x + y
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        features = self.fc(x.flatten(1))
        x = self.out(features)
        if self.cmap_dim > 0:
            # Projection discriminator: <phi(x), embed(c)>, normalised by sqrt(cmap_dim).
            x = (x * cmap).sum(dim=1, keepdim=True) * (1.0 / math.sqrt(self.cmap_dim))
        if self.q_dim > 0:  # InfoGAN: Q shares every layer of D but its last
            x = torch.cat([x, self.q(features)], dim=1)
        return x


class Discriminator(nn.Module):
    """images [N, img_channels, R, R] (+ one-hot c [N, c_dim]) -> logits [N, 1], or with an
    InfoGAN Q head (``q_dim`` > 0) [N, 1 + q_dim]: the score, then the code logits."""

    def __init__(
        self,
        c_dim: int = 0,  # 0: unconditional
        img_resolution: int = 256,
        img_channels: int = 3,
        architecture: str = "resnet",  # resnet (StyleGAN2 config F) | orig (cifar) | skip
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,  # projection size (None: channels at 4x4)
        mbstd_group: int = 4,  # minibatch-stddev group size (0: off); clipped to N
        mbstd_channels: int = 1,
        map_depth: int = 8,  # layers of the label mapping network (conditional only)
        map_lr_mult: float = 0.01,
        num_fp16_res: int = 0,  # highest-resolution blocks that may run in reduced precision
        q_dim: int = 0,  # InfoGAN Q head over the latent code's values (0: none)
    ) -> None:
        super().__init__()
        log2 = _check_resolution(img_resolution)
        threshold = reduced_precision_threshold(img_resolution, num_fp16_res)
        if architecture not in ("resnet", "orig", "skip"):
            raise ValueError(f"architecture: must be resnet, orig or skip, got {architecture!r}")
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.q_dim = q_dim
        self.architecture = architecture
        block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {
            res: _channels(channel_base, channel_max, res) for res in [*block_resolutions, 4]
        }
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim
        self.blocks = nn.ModuleDict()
        for res in block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            self.blocks[str(res)] = DiscriminatorBlock(
                in_channels,
                channels[res],
                channels[res // 2],
                img_channels,
                architecture,
                conv_clamp,
                reduced=res >= threshold,
            )
        if c_dim > 0:
            self.mapping = MappingNetwork(
                0, c_dim, cmap_dim, None, map_depth, map_lr_mult, w_avg_beta=None
            )
        self.epilogue = DiscriminatorEpilogue(
            channels[4],
            cmap_dim,
            img_channels,
            use_fromrgb=(architecture == "skip" or not block_resolutions),
            mbstd_group=mbstd_group,
            mbstd_channels=mbstd_channels,
            conv_clamp=conv_clamp,
            q_dim=q_dim,
        )

    def forward(self, images: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x, img = None, images
        for block in self.blocks.values():
            x, img = block(x, img)
        cmap = None
        if self.c_dim > 0:
            if c is None:
                raise ValueError(
                    f"c: this discriminator is conditional (c_dim={self.c_dim}); pass one-hot labels"
                )
            cmap = self.mapping(None, c)
        return self.epilogue(x, img if img is not None else images, cmap)
