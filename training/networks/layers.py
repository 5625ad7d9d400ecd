"""Building blocks of StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality
of StyleGAN"), in pure PyTorch: no custom CUDA ops.

- Equalized learning rate (Karras et al. 2018, sec. 4.1): weights are stored as N(0, 1) (divided
  by the lr multiplier) and scaled by ``lr_mult / sqrt(fan_in)`` at runtime, so Adam sees every
  layer at the same scale.
- ``bias_act``: bias + activation + gain + clamp (NVlabs' fused op, unfused here; autograd and
  ``torch.compile`` fuse it well enough).
- FIR resampling (NVlabs ``upfirdn2d`` with the [1, 3, 3, 1] filter) as depthwise
  ``conv2d``/``conv_transpose2d``: upsampling is one strided transposed conv instead of
  zero-insertion + conv, downsampling one strided conv.
- ``modulated_conv2d`` (StyleGAN2 eq. 1-3): modulation, demodulation, optional noise; either the
  fused grouped-conv batch trick or "scale activations before and after one shared conv".

Everything takes tensors and returns tensors; no devices, I/O or ``.backward()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
# Gains that keep the activation variance at ~1 (NVlabs ``def_gain``): He init for lrelu.
ACTIVATION_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Pixel-norm (StyleGAN eq. in sec. 2): ``x / sqrt(mean(x^2) + eps)`` along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str = "linear",
    gain: float = 1.0,
    clamp: float | None = None,
) -> torch.Tensor:
    """``clamp(act(x + bias) * gain, -clamp, clamp)``; bias broadcasts over dim 1.

    x: [N, C, ...]; bias: [C] or None; clamp None means no clamping (NVlabs ``conv_clamp``, which
    keeps fp16 activations from overflowing).
    """
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif activation != "linear":
        raise ValueError(f"activation: unknown {activation!r}; valid: linear, lrelu")
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# --------------------------------------------------------------------------------------------
# FIR resampling (upfirdn2d)


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable 1-D taps -> normalized 2-D filter [k, k] (outer product, sums to 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _depthwise(f: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    # [k, k] -> [C, 1, k, k]; flipped so that conv2d (a correlation) performs a true convolution
    # as upfirdn2d does (a no-op for the symmetric filters used here). int(): the channel count is
    # static; a traced/symbolic size would make the kernel shape unknown to the ONNX exporter.
    return f.flip([0, 1]).to(dtype)[None, None].expand(int(channels), 1, *f.shape)


def _pad_or_crop(x: torch.Tensor, p0: int, p1: int) -> torch.Tensor:
    """Pad (positive) or crop (negative) the last two dims by p0 before and p1 after."""
    if p0 >= 0 and p1 >= 0:
        return F.pad(x, [p0, p1, p0, p1]) if (p0 or p1) else x
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    h, w = x.shape[2], x.shape[3]
    return x[:, :, max(-p0, 0) : h - max(-p1, 0), max(-p0, 0) : w - max(-p1, 0)]


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor,
    padding: int | tuple[int, int] = 0,
    gain: float = 1.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Depthwise FIR filter. x: [N, C, H, W], f: [k, k]; padding (p0, p1) on both spatial axes
    -> [N, C, H + p0 + p1 - k + 1, ...]; optional per-channel bias [C] added by the conv."""
    p0, p1 = (padding, padding) if isinstance(padding, int) else padding
    weight = _depthwise(f * gain, x.shape[1], x.dtype)
    if p0 == p1 and p0 >= 0:
        return F.conv2d(x, weight, bias, padding=p0, groups=x.shape[1])
    return F.conv2d(_pad_or_crop(x, p0, p1), weight, bias, groups=x.shape[1])


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, padding: int = 0) -> torch.Tensor:
    """FIR upsampling, NVlabs ``upsample2d``: zero-insertion, then filter with gain up^2.

    x: [N, C, H, W] -> [N, C, H*up, W*up]. Implemented as one strided depthwise
    ``conv_transpose2d``: transposed conv == zero-insertion + conv, and its output is the
    upfirdn2d result shifted by ``k - 1 - p0`` pixels, which the crop below removes.
    """
    k = f.shape[-1]
    p0 = (k + up - 1) // 2 + padding
    p1 = (k - up) // 2 + padding
    weight = _depthwise(f.flip([0, 1]) * (up * up), x.shape[1], x.dtype)  # transposed conv: no flip
    crop0, crop1 = k - 1 - p0, k - up - p1
    if crop0 == crop1 and crop0 >= 0:
        return F.conv_transpose2d(x, weight, stride=up, padding=crop0, groups=x.shape[1])
    y = F.conv_transpose2d(x, weight, stride=up, groups=x.shape[1])
    return _pad_or_crop(y, -crop0, -crop1)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """FIR downsampling, NVlabs ``downsample2d``: filter, then keep every ``down``-th pixel.

    x: [N, C, H, W] -> [N, C, H/down, W/down]; one strided depthwise conv.
    """
    k = f.shape[-1]
    p0, p1 = (k - down + 1) // 2, (k - down) // 2
    weight = _depthwise(f, x.shape[1], x.dtype)
    if p0 != p1:
        x, p0 = _pad_or_crop(x, p0, p1), 0
    return F.conv2d(x, weight, stride=down, padding=p0, groups=x.shape[1])


def conv2d_resample(
    x: torch.Tensor,
    weight: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    groups: int = 1,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """2-D conv with optional FIR up/downsampling by 2 (NVlabs ``conv2d_resample`` fast paths).

    x: [N, groups*I, H, W]; weight: [groups*O, I, k, k] (odd k, "same" padding); bias:
    [groups*O] or None, added by the last conv op (saves an elementwise pass) ->
    [N, groups*O, H*up/down, W*up/down].
    - up: strided transposed conv (k x k), then the FIR filter with gain up^2 (blurs away the
      checkerboard of the transposed conv).
    - down, k == 1: FIR downsample first, then the 1x1 conv (4x fewer MACs).
    - down, k > 1: FIR filter with padding, then the strided conv.
    """
    k = weight.shape[-1]
    pad = k // 2
    if up == 1 and down == 1:
        return F.conv2d(x, weight, bias, padding=pad, groups=groups)
    assert f is not None, "resampling needs an FIR filter"
    fk = f.shape[-1]
    if up > 1:
        # Transposed conv wants [groups*I, O, k, k].
        if groups == 1:
            w = weight.transpose(0, 1)
        else:
            o, i = weight.shape[0] // groups, weight.shape[1]
            w = weight.reshape(groups, o, i, k, k).transpose(1, 2).reshape(groups * i, o, k, k)
        # Padding bookkeeping from conv2d_resample: transposed conv without padding gives
        # (H-1)*up + k pixels; the filter's padding brings it back to H*up.
        p0 = pad + (fk + up - 1) // 2 - (k - 1)
        p1 = pad + (fk - up) // 2 - (k - up)
        # (No kernel flip as NVlabs does: the weights are learned, a flip is just a relabelling.)
        x = F.conv_transpose2d(x, w, stride=up, groups=groups)
        return filter2d(x, f, padding=(p0, p1), gain=up * up, bias=bias)
    p0 = (fk - down + 1) // 2
    p1 = (fk - down) // 2
    if k == 1:
        return F.conv2d(downsample2d(x, f, down), weight, bias, groups=groups)
    x = filter2d(x, f, padding=(pad + p0, pad + p1))
    return F.conv2d(x, weight, bias, stride=down, groups=groups)


# --------------------------------------------------------------------------------------------
# Equalized-lr layers


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalized lr. x: [N, in_features] -> [N, out_features]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,  # add a learned bias
        activation: str = "linear",  # "linear" or "lrelu" (with gain sqrt 2)
        lr_multiplier: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        bias_init: float = 0.0,  # initial bias value (1 for style affines: styles start at 1)
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        # Stored as N(0, 1/lr_mult^2) so that weight * weight_gain starts as N(0, 1/fan_in) while
        # the effective step size is scaled by lr_mult.
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, self.activation, gain=ACTIVATION_GAIN[self.activation])

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class Conv2dLayer(nn.Module):
    """Conv with equalized lr and optional FIR up/downsampling (the discriminator's layer).

    x: [N, in_channels, H, W] -> [N, out_channels, H*up/down, W*up/down].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",  # "linear" or "lrelu"
        up: int = 1,  # 1 or 2
        down: int = 1,  # 1 or 2
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for resampling
        conv_clamp: float | None = None,  # clamp outputs to +-this (None: never)
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        )
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = ACTIVATION_GAIN[activation]

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        # act(conv(x, w) + b) * g == act(conv(x, g*w) + g*b) for g > 0 (lrelu is positively
        # homogeneous): folding the gain into the small weight and bias tensors and the bias into
        # the conv saves two full-size elementwise passes (forward and backward).
        total_gain = self.act_gain * gain
        w = (self.weight * (self.weight_gain * total_gain)).to(x.dtype)
        b = (self.bias * total_gain).to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, bias=b)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, None, self.activation, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, k={self.weight.shape[-1]}, "
            f"act={self.activation}, up={self.up}, down={self.down}"
        )


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused_modconv: bool = True,
    bias: torch.Tensor | None = None,
    gain: float = 1.0,
) -> torch.Tensor:
    """Modulated convolution, StyleGAN2 sec. 2.2: ``gain * (conv(x, w'') + noise + bias)``.

    x: [N, I, H, W]; weight: [O, I, k, k] (raw N(0,1), demodulation normalises it); styles: [N, I];
    noise: broadcastable to [N, O, H*up, W*up] or None; bias: [O] or None -> [N, O, H*up, W*up].
    ``gain`` (the activation gain, folded in by the caller since lrelu(g*y) = g*lrelu(y)) and
    ``bias`` are applied inside the conv / demodulation multiply where possible, so the layer
    costs as few full-size elementwise passes as possible.

    Modulation (eq. 1) w'_ijk = s_i * w_ijk; demodulation (eq. 3) w''_ijk = w'_ijk /
    sqrt(sum_ik w'_ijk^2 + eps).
    - fused_modconv=True: per-sample weights, the batch folded into the channel axis and run as
      one grouped conv (fewest kernel launches; best for inference and small batches).
    - fused_modconv=False: one shared conv with the activations scaled by s before and by the
      demodulation coefficients after (mathematically identical, since both are per-sample
      per-channel scalings). NVlabs uses this in training because the grouped conv's weight
      gradient is slow in cuDNN.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise to avoid fp16 overflow (NVlabs); demodulation makes this a no-op in exact
        # arithmetic because it cancels any per-output-channel and per-sample scale.
        weight = weight * (
            1
            / math.sqrt(in_channels * kh * kw)
            / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = None
    if demodulate:
        # sum_ik (s_i w_oik)^2 = sum_i s_i^2 * (sum_k w_oik^2): no [N, O, I, k, k] tensor needed.
        # In float32 even under autocast: a sum of I*k*k squares overflows float16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            wsq = weight.float().square().sum(dim=[2, 3])  # [O, I]
            dcoefs = (styles.float().square() @ wsq.t() + 1e-8).rsqrt()  # [N, O]

    if noise is not None and gain != 1:
        noise = noise * gain  # [N or 1, 1, H, W]: cheap
    if bias is not None and gain != 1:
        bias = bias * gain

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        if dcoefs is None:
            # No per-sample output scale: the bias (and gain) go into the shared conv.
            w = weight * gain if gain != 1 else weight
            x = conv2d_resample(
                x,
                w.to(x.dtype),
                resample_filter,
                up=up,
                bias=None if bias is None else bias.to(x.dtype),
            )
        else:
            x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up)
            scale = (dcoefs * gain).to(x.dtype).reshape(batch, -1, 1, 1)
            x = torch.addcmul(noise.to(x.dtype), x, scale) if noise is not None else x * scale
            noise = None
            if bias is not None:
                x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)  # [N, O, I, k, k]
    if dcoefs is not None:
        w = w * (dcoefs * gain).reshape(batch, -1, 1, 1, 1)
    elif gain != 1:
        w = w * gain
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw).to(x.dtype)
    b = (
        None if bias is None else bias.to(x.dtype).repeat(batch)
    )  # one bias per (sample, channel) group
    x = conv2d_resample(x, w, resample_filter, up=up, groups=batch, bias=b)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


class MinibatchStdLayer(nn.Module):
    """Minibatch standard deviation (ProGAN sec. 3, StyleGAN2 D epilogue).

    x: [N, C, H, W] -> [N, C + num_channels, H, W]. Samples ``i, i + n, i + 2n, ...`` form a
    group of size G = min(group_size, N); when N is not divisible by G, G falls back to the largest
    divisor of N below it (NVlabs would fail), so an odd last batch still works.
    """

    def __init__(self, group_size: int, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = mbstd_group_size(self.group_size, n)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [n, F, c, H, W] stddev over the group
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)  # [n, F, 1, 1]
        y = y.repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


def mbstd_group_size(group_size: int, n: int) -> int:
    """The group :class:`MinibatchStdLayer` forms on a batch of ``n`` (shapes only)."""
    g = max(min(group_size, n), 1)
    while n % g:  # no data-dependent control flow
        g -= 1
    return g


def join_batches(a: torch.Tensor, b: torch.Tensor, group_size: int) -> torch.Tensor | None:
    """``a`` and ``b`` ([N, ...] each) as one batch [2N, ...] on which ``MinibatchStdLayer(
    group_size)`` forms exactly the groups it forms on ``a`` and on ``b`` alone (each group all
    ``a`` or all ``b``), so a D whose only cross-sample layer is the mbstd scores both in one
    forward with the same result as two; None when no such layout exists (``b`` a different
    size, or a batch below the group size). ``group_size`` 0: no mbstd (a plain concatenation).
    The layer groups samples ``i, i + 2N/G, ...``: ``a`` and ``b`` alternate in blocks of N/G.
    :func:`split_batches` undoes it."""
    n = a.shape[0]
    if b.shape[0] != n or b.shape[1:] != a.shape[1:]:
        return None
    if group_size <= 0:
        return torch.cat([a, b])
    g = mbstd_group_size(group_size, n)
    if mbstd_group_size(group_size, 2 * n) != g:
        return None
    x = torch.stack([a.reshape(g, n // g, *a.shape[1:]), b.reshape(g, n // g, *b.shape[1:])], 1)
    x = x.reshape(2 * n, *a.shape[1:])
    if (
        a.dim() == 4
        and not a.is_contiguous()
        and a.is_contiguous(memory_format=torch.channels_last)
    ):
        x = x.contiguous(memory_format=torch.channels_last)  # keep the caller's NHWC layout
    return x


def split_batches(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`join_batches` on any per-sample output [2N, ...] -> (a's, b's)."""
    n = x.shape[0] // 2
    if group_size <= 0:
        return x[:n], x[n:]
    g = mbstd_group_size(group_size, n)
    y = x.reshape(g, 2, n // g, *x.shape[1:])
    return y[:, 0].reshape(n, *x.shape[1:]), y[:, 1].reshape(n, *x.shape[1:])


# --------------------------------------------------------------------------------------------
# Precision policy (NVlabs ``num_fp16_res``)

PRECISIONS = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ReducedPrecisionBlock(nn.Module):
    """A block that may compute in a reduced dtype: one of the ``num_fp16_res`` highest-resolution
    blocks (NVlabs' policy). ``reduced`` is fixed at construction; ``compute_dtype`` is float32
    until :func:`set_precision` picks fp16/bf16. Parameters stay float32 (they are cast per
    forward), so optimizers, EMA, checkpoints and exports never see a reduced dtype."""

    reduced: bool = False
    compute_dtype: torch.dtype = torch.float32


def reduced_precision_threshold(img_resolution: int, num_fp16_res: int) -> int:
    """Lowest block resolution that runs in reduced precision: the ``num_fp16_res`` highest
    resolutions, never below 8x8 (NVlabs ``fp16_resolution``; 0 gives one above the image)."""
    if num_fp16_res < 0:
        raise ValueError(f"num_fp16_res: must be >= 0, got {num_fp16_res}")
    return max(2 ** (int(math.log2(img_resolution)) + 1 - num_fp16_res), 8)


def set_precision(module: nn.Module, precision: str) -> nn.Module:
    """Set the compute dtype of every reduced-precision-capable block inside ``module``.

    precision: "no" (everything float32), "fp16" or "bf16" (the blocks built as ``reduced``; the
    rest, e.g. mapping network, style affines, demodulation, ToRGB / skip image, minibatch-stddev
    and the D epilogue, stay float32). Outputs are float32 either way. Returns ``module``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    for m in module.modules():
        if isinstance(m, ReducedPrecisionBlock):
            m.compute_dtype = dtype if m.reduced else torch.float32
    return module
