"""StyleGAN2 generator (Karras et al. 2020): mapping network, synthesis layers/blocks/network,
the generator, and style mixing. The family's entry point is :mod:`training.networks.stylegan2`.

z [N, z_dim] (+ one-hot c) -> MappingNetwork -> ws [N, num_ws, w_dim] -> SynthesisNetwork (learned
4x4 constant, two modulated 3x3 convs per resolution, per-layer noise, skip ToRGB outputs
upsampled with a [1,3,3,1] FIR filter and summed) -> images [N, C, H, W].
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .layers import (
    FullyConnectedLayer,
    ReducedPrecisionBlock,
    bias_act,
    modulated_conv2d,
    normalize_2nd_moment,
    reduced_precision_threshold,
    setup_filter,
    upsample2d,
)

NoiseMode = Literal["random", "const", "none"]
RESAMPLE_FILTER = (1, 3, 3, 1)


def _check_resolution(resolution: int) -> int:
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"img_resolution: must be a power of two >= 4, got {resolution}")
    return int(math.log2(resolution))


def _channels(channel_base: int, channel_max: int, resolution: int) -> int:
    """Feature maps at a resolution: min(channel_base // r, channel_max), at least 1."""
    return max(1, min(channel_base // resolution, channel_max))


# --------------------------------------------------------------------------------------------
# Generator


def latent_code(z: torch.Tensor, classes: int) -> torch.Tensor:
    """InfoGAN's categorical code carried by a latent: the argmax of ``z[:, :classes]`` -> int64
    [N]. For z ~ N(0, I) it is uniform over the ``classes`` values and independent of the other
    coordinates, so sampling z samples the code; any z (a seed, a projected latent) has one."""
    return z[:, :classes].argmax(dim=1)


class MappingNetwork(nn.Module):
    """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None).

    z and the label embedding are each normalised to unit second moment and concatenated
    (NVlabs). With ``latent_classes`` k > 0 (InfoGAN's categorical code) the "label" is read from
    z itself, :func:`latent_code`, so the network keeps an unconditional interface. The running
    mean ``w_avg`` (truncation centre) is a persistent buffer, updated with ``w_avg_beta`` only
    when ``update_emas=True``, so calls by the loss (style mixing, path length) and by evaluation
    leave it alone.
    """

    def __init__(
        self,
        z_dim: int,  # latent size (0: no latent, e.g. the discriminator's label mapping)
        c_dim: int,  # label size (0: unconditional)
        w_dim: int,  # output size
        num_ws: int | None,  # broadcast count (None: return [N, w_dim])
        num_layers: int = 8,  # fully-connected layers
        lr_multiplier: float = 0.01,  # equalized-lr multiplier (StyleGAN sec. 2)
        w_avg_beta: float | None = 0.995,  # decay of w_avg (None: no w_avg buffer)
        latent_classes: int = 0,  # InfoGAN code read from z (unconditional only; 0: none)
    ) -> None:
        super().__init__()
        if latent_classes and (c_dim or latent_classes > z_dim):
            raise ValueError(
                f"latent_classes: needs an unconditional mapping with z_dim >= {latent_classes}"
            )
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        self.latent_classes = latent_classes
        embed_in = c_dim or latent_classes
        embed_features = w_dim if embed_in > 0 else 0
        if embed_in > 0:
            self.embed = FullyConnectedLayer(embed_in, embed_features)
        features = [z_dim + embed_features] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnectedLayer(
                features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier
            )
            for i in range(num_layers)
        )
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        device = (z if z is not None else c).device
        # Always float32, as NVlabs: the mapping is cheap, and under autocast a low-precision w
        # would lose the truncation/w_avg precision (and lerp with the fp32 buffer would fail).
        with torch.autocast(device_type=device.type, enabled=False):
            return self._forward(z, c, truncation_psi, truncation_cutoff, update_emas)

    def _forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float,
        truncation_cutoff: int | None,
        update_emas: bool,
    ) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(
                    f"c: this network is conditional (c_dim={self.c_dim}); pass one-hot labels"
                )
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        elif self.latent_classes > 0:
            code = F.one_hot(latent_code(z, self.latent_classes), self.latent_classes)
            y = normalize_2nd_moment(self.embed(code.to(torch.float32)))
            x = torch.cat([x, y], dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_emas and self.w_avg_beta is not None:
            # w_avg <- lerp(mean_w, w_avg, beta): an EMA of the batch mean of w.
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if truncation_psi != 1:
            # Truncation trick (StyleGAN sec. 4 / BigGAN): w' = w_avg + psi * (w - w_avg), on the
            # first `truncation_cutoff` layers only when given.
            truncated = self.w_avg.lerp(x, truncation_psi)
            if truncation_cutoff is None:
                x = truncated
            else:
                keep = torch.arange(self.num_ws, device=x.device) < truncation_cutoff
                x = torch.where(keep[None, :, None], truncated, x)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + lrelu. x: [N, I, r/up, r/up], w: [N, w_dim] ->
    [N, O, r, r]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,  # output resolution
        up: int = 1,  # 2: FIR-upsample by 2 (first conv of a block)
        use_noise: bool = True,  # per-pixel noise with a learned strength
        conv_clamp: float | None = None,  # clamp outputs to +-this (None: never)
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up, self.use_noise, self.conv_clamp = (
            resolution,
            up,
            use_noise,
            conv_clamp,
        )
        # Styles start at 1 (bias_init=1), so the initial network is an ordinary conv net.
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER), persistent=False)
        if use_noise:
            # Persistent: `noise_mode="const"` must give the same images after export/import.
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            # shape [1], not []: DeepSpeed broadcasts parameters as byte views, impossible for 0-dim
            self.noise_strength = nn.Parameter(torch.zeros([1]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: NoiseMode = "random",
        fused_modconv: bool = True,
    ) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn(
                [x.shape[0], 1, self.resolution, self.resolution], device=x.device, dtype=x.dtype
            )
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        # Bias and the lrelu gain sqrt(2) are applied inside modulated_conv2d (fewer passes).
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            resample_filter=self.resample_filter,
            fused_modconv=fused_modconv,
            bias=self.bias,
            gain=math.sqrt(2.0),
        )
        return bias_act(x, None, "lrelu", clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, res={self.resolution}, up={self.up}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation. x: [N, I, r, r], w: [N, w_dim] -> [N, C, r, r]."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        # No demodulation here, so equalized lr is applied to the styles instead.
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(
            x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv, bias=self.bias
        )
        return bias_act(x, None, clamp=self.conv_clamp)


class SynthesisBlock(ReducedPrecisionBlock):
    """One resolution of the skip generator: (const or up-conv) + conv + ToRGB.

    (x [N, I, r/2, r/2] or None, img [N, C, r/2, r/2] or None, ws [N, num_conv + num_torgb, w_dim])
    -> (x [N, O, r, r] in ``compute_dtype``, img [N, C, r, r] float32). The convs run in
    ``compute_dtype`` (styles and demodulation coefficients are still computed in float32); the
    ToRGB layer and the skip image are always float32.
    """

    def __init__(
        self,
        in_channels: int,  # 0: first block, starts from the learned constant
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None = None,
        reduced: bool = False,  # may run in reduced precision (see set_precision)
    ) -> None:
        super().__init__()
        self.in_channels, self.resolution, self.reduced = in_channels, resolution, reduced
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp
        )
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER), persistent=False)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "random",
        fused_modconv: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.compute_dtype
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, fused_modconv)
        else:
            x = self.conv0(x.to(dtype), ws[:, 0], noise_mode, fused_modconv)
            x = self.conv1(x, ws[:, 1], noise_mode, fused_modconv)
        # .float() again: under an outer autocast the conv would hand back the autocast dtype.
        y = self.torgb(x.float(), ws[:, self.num_conv], fused_modconv).float()
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, img_channels, R, R] (about [-1, 1])."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,  # power of two, 4..1024
        img_channels: int,
        channel_base: int = 32768,  # feature maps at r: min(channel_base // r, channel_max)
        channel_max: int = 512,
        conv_clamp: float | None = None,  # clamp conv outputs to +-this (None: never)
        num_fp16_res: int = 0,  # highest resolutions that may run in reduced precision
    ) -> None:
        super().__init__()
        log2 = _check_resolution(img_resolution)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        threshold = reduced_precision_threshold(img_resolution, num_fp16_res)
        self.blocks = nn.ModuleDict()
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = _channels(channel_base, channel_max, res // 2) if res > 4 else 0
            block = SynthesisBlock(
                in_channels,
                _channels(channel_base, channel_max, res),
                w_dim,
                res,
                img_channels,
                conv_clamp,
                reduced=res >= threshold,
            )
            self.blocks[str(res)] = block
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last ToRGB; earlier ToRGBs share the w of the next block's conv0

    def forward(
        self, ws: torch.Tensor, noise_mode: NoiseMode = "random", fused_modconv: bool | None = None
    ) -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode: must be random, const or none, got {noise_mode!r}")
        if fused_modconv is None:
            # NVlabs' heuristic on GPU: grouped conv for inference; in training the shared conv
            # with activation scaling is faster (cheaper weight gradient), see modulated_conv2d.
            # On CPU (oneDNN) grouped convs are slow: unfused measured ~1.5x (training) and ~2x
            # (inference) faster at 32 px, batch 32, so CPU always runs unfused.
            fused_modconv = not self.training and ws.device.type != "cpu"
        x = img = None
        w_idx = 0
        for block in self.blocks.values():
            x, img = block(
                x,
                img,
                ws[:, w_idx : w_idx + block.num_conv + block.num_torgb],
                noise_mode,
                fused_modconv,
            )
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """z [N, z_dim], c [N, c_dim] or None -> images [N, img_channels, R, R] in about [-1, 1]."""

    def __init__(
        self,
        z_dim: int = 512,
        c_dim: int = 0,  # 0: unconditional
        w_dim: int = 512,
        img_resolution: int = 256,
        img_channels: int = 3,
        map_depth: int = 8,  # mapping-network layers
        map_lr_mult: float = 0.01,  # mapping-network lr multiplier
        w_avg_beta: float = 0.995,  # decay of the running W mean (truncation centre)
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,  # clamp conv outputs to +-this (None: never)
        num_fp16_res: int = 0,  # highest-resolution blocks that may run in reduced precision
        latent_classes: int = 0,  # InfoGAN categorical code read from z (0: none)
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.latent_classes = latent_classes
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(
            w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp, num_fp16_res
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim, c_dim, w_dim, self.num_ws, map_depth, map_lr_mult, w_avg_beta, latent_classes
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: NoiseMode = "random",
        update_emas: bool = False,
        fused_modconv: bool | None = None,
    ) -> torch.Tensor:
        """z: [N, z_dim]; c: [N, c_dim] one-hot (None when c_dim == 0) -> [N, C, R, R].

        truncation_psi: 1 = off, 0 = every sample at w_avg; truncation_cutoff: truncate only the
        first this many ws (None: all). noise_mode: random (training), const (the persistent
        per-layer noise: deterministic), none. update_emas: update ``mapping.w_avg`` (training
        only). fused_modconv: grouped-conv modulation (None: fused in eval, unfused in training;
        pass False when tracing for export with a dynamic batch).
        """
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)


def mix_styles(
    generator: nn.Module,
    z: torch.Tensor,
    c: torch.Tensor | None,
    prob: float,
    update_emas: bool = False,
) -> torch.Tensor:
    """Style-mixing regularisation (StyleGAN sec. 3.1, as NVlabs' StyleGAN2Loss).

    generator: a :class:`Generator` (its ``mapping`` is used) or a mapping network itself.
    Returns ws [N, num_ws, w_dim]: with probability ``prob`` (one draw per batch) the layers from a
    random cutoff in [1, num_ws) onward take the ws of a second latent ``randn_like(z)``. Use
    ``generator.synthesis(ws)`` on the result. Selection is a mask + ``torch.where``, so there is no
    data-dependent Python control flow (``torch.compile`` friendly). The second mapping call never
    updates ``w_avg``.
    """
    mapping = getattr(generator, "mapping", generator)
    ws = mapping(z, c, update_emas=update_emas)
    if prob <= 0:
        return ws
    num_ws = ws.shape[1]
    cutoff = torch.randint(1, max(num_ws, 2), [], device=ws.device)
    cutoff = torch.where(
        torch.rand([], device=ws.device) < prob, cutoff, torch.full_like(cutoff, num_ws)
    )
    mixed = mapping(torch.randn_like(z), c, update_emas=False)
    take_mixed = torch.arange(num_ws, device=ws.device) >= cutoff
    return torch.where(take_mixed[None, :, None], mixed, ws)
