"""Alias-free geometric warps for ADA: pad, upsample 2x, warp, downsample 2x (sym6 wavelet).

ADA (Karras et al. 2020, appendix B.3) executes its geometric augmentations (rotation, scale,
fractional translation) on a 2x supersampled image, with an orthogonal wavelet low-pass (sym6)
for both the upsampling and the downsampling, so that the bilinear resampling neither aliases
nor blurs more than needed. NVlabs' ``training/augment.py`` (``AugmentPipe.forward``, "Execute
geometric transformations") is the reference; this is our own implementation on Kornia's
separable filtering and torch's ``grid_sample``, with two differences:

- NVlabs pads each batch just enough for the transforms drawn, which needs the margin on the
  host (a device sync per call). We pad a fixed filter margin with reflection and let
  ``grid_sample``'s reflection padding mirror anything further out: no host sync, and the
  pixels inside the image are the same (only the invented border content differs).
- Kornia's homography helpers build their normalisation matrices from host data (a host-to-device
  copy per call), so the sampling grid is built here from device ops only.

Also here: :func:`grid_sample`, bilinear sampling with a double backward that works on every
supported torch (R1 through ADA differentiates the warp twice; see its docstring).
"""

from __future__ import annotations

import functools

import torch
from kornia.filters import filter2d_separable

# Decomposition low-pass of the Symlet-6 wavelet (the standard published coefficients, as in
# PyWavelets' ``pywt.Wavelet("sym6").dec_lo`` reversed / NVlabs' ``wavelets["sym6"]``).
SYM6 = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)
FILTER_PAD = len(SYM6) // 4  # 3: margin (in input pixels) the 2x filters reach beyond an edge
# sym6 is not symmetric: its centre of mass (group delay at DC) is tap 5.098, not 5.5. With the
# padding below, input pixel m of upsample2x lands at output coordinate 2m + UP_OFFSET, and the
# warp's sampling grid must use that same offset, or flips and rotations (which reverse the
# filter's delay) shift the image by ~0.2 px.
UP_OFFSET = len(SYM6) // 2 - (len(SYM6) - 1) + sum(k * t for k, t in enumerate(SYM6)) / sum(SYM6)


@functools.lru_cache(maxsize=16)
def _sym6(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Built once per device/dtype (a host-to-device copy at the first call only), normalised to
    # unit DC gain like NVlabs' setup_filter.
    taps = torch.tensor(SYM6, dtype=torch.float64)
    return (taps / taps.sum()).to(device=device, dtype=dtype)[None]  # [1, 12]


# ----------------------------------------------------------------------------------------------
# grid_sample with a double backward


class _GridSample(torch.autograd.Function):
    """Bilinear ``grid_sample`` (align_corners=False) whose backward is itself differentiable
    wrt the incoming gradient.

    The R1 penalty through the augmentation needs d(grad_input)/d(grad_output) of the sampler.
    ``grid_sample`` is linear in its input, so that derivative is ``grid_sample`` again applied
    to the second-order gradient (the idea of NVlabs' ``grid_sample_gradfix``). torch's own
    double backward of ``grid_sampler_2d_backward`` only arrived in 2026 (pytorch/pytorch#177487);
    older releases raise "derivative for grid_sampler_2d_backward is not implemented", and
    pyproject admits torch>=2.4, so we supply it. The grid is never differentiated twice (it
    comes from random draws, never from the images).
    """

    @staticmethod
    def forward(ctx, images, grid, padding_mode, align_corners):
        ctx.save_for_backward(images, grid)
        ctx.modes = (padding_mode, align_corners)
        return torch.nn.functional.grid_sample(
            images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners
        )

    @staticmethod
    def backward(ctx, grad_output):
        images, grid = ctx.saved_tensors
        grad_images, grad_grid = _GridSampleBackward.apply(
            grad_output, images, grid, *ctx.modes, ctx.needs_input_grad[1]
        )
        return grad_images, (grad_grid if ctx.needs_input_grad[1] else None), None, None


class _GridSampleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_output, images, grid, padding_mode, align_corners, want_grid):
        mode = {"zeros": 0, "border": 1, "reflection": 2}[padding_mode]
        grad_images, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_output, images, grid, 0, mode, align_corners, [True, bool(want_grid)]
        )
        ctx.save_for_backward(grid)
        ctx.modes = (padding_mode, align_corners)
        if grad_grid is None or not want_grid:
            grad_grid = torch.zeros_like(grid)
        return grad_images, grad_grid

    @staticmethod
    def backward(ctx, grad2_images, grad2_grid):
        if ctx.needs_input_grad[2]:
            raise RuntimeError("grid_sample: the second derivative wrt the grid is not supported")
        (grid,) = ctx.saved_tensors
        grad2_output = None
        if ctx.needs_input_grad[0] and grad2_images is not None:
            grad2_output = _GridSample.apply(grad2_images, grid, *ctx.modes)
        return grad2_output, None, None, None, None, None


def grid_sample(
    images: torch.Tensor,
    grid: torch.Tensor,
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> torch.Tensor:
    """Bilinear ``torch.nn.functional.grid_sample``: images [N, C, H, W], grid [N, Ho, Wo, 2] in
    normalised coords -> [N, C, Ho, Wo]; twice differentiable wrt ``images``."""
    return _GridSample.apply(images, grid, padding_mode, align_corners)


# ----------------------------------------------------------------------------------------------
# 2x resampling with the sym6 low-pass


def upsample2x(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W]: zero insertion, then the sym6 low-pass (gain 2 per axis).

    Input pixel m lands at output coordinate 2m + UP_OFFSET (~0.1; 0.5 for a symmetric filter).
    Borders see zeros beyond the input: pad the input first (the warp below does).
    """
    n, c, h, w = images.shape
    stuffed = images.new_zeros([n, c, h, 2, w, 2])
    stuffed[:, :, :, 0, :, 0] = images
    stuffed = stuffed.reshape(n, c, 2 * h, 2 * w)
    taps = _sym6(images.device, images.dtype).flip(-1) * 2  # convolution = flipped correlation
    k = taps.shape[-1]
    stuffed = torch.nn.functional.pad(stuffed, [k // 2, k // 2 - 1, k // 2, k // 2 - 1])
    return filter2d_separable(stuffed, taps, taps, padding="valid")


def downsample2x(images: torch.Tensor, crop: int = 0) -> torch.Tensor:
    """[N, C, 2H, 2W] -> [N, C, H - 2 crop, W - 2 crop]: sym6 low-pass, keep every second pixel.

    The inverse of :func:`upsample2x` (the filter is orthogonal: down(up(x)) == x up to rounding
    away from the borders). ``crop`` drops that many output pixels on each side.
    """
    taps = _sym6(images.device, images.dtype)
    k = taps.shape[-1]
    # Input pixel u sits at coordinate (u - UP_OFFSET) / 2 (upsample2x's convention), so the
    # window of output pixel i (centre of mass at 2i + UP_OFFSET) starts at input 2i - (k/2 - 1).
    edge = 2 * crop - (k // 2 - 1)
    if edge > 0:
        images = images[:, :, edge : -edge or None, edge : -edge or None]
    elif edge < 0:
        images = torch.nn.functional.pad(images, [-edge] * 4)
    return filter2d_separable(images, taps, taps, padding="valid")[:, :, ::2, ::2]


# ----------------------------------------------------------------------------------------------
# Warps in centred pixel coordinates


def _affine_inverse(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of affine [N, 3, 3] matrices (last row 0, 0, 1) in closed form: elementwise ops
    only (a batched ``linalg.inv`` may call a solver library that waits for the device)."""
    a, b, tx = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    c, d, ty = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
    inv_det = 1 / (a * d - b * c)
    ia, ib, ic, id_ = d * inv_det, -b * inv_det, -c * inv_det, a * inv_det
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = [
        torch.stack([ia, ib, -(ia * tx + ib * ty)], dim=-1),
        torch.stack([ic, id_, -(ic * tx + id_ * ty)], dim=-1),
        torch.stack([zero, zero, one], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def _source_grid(
    inverse: torch.Tensor,
    out_size: tuple[int, int],
    out_scale: float,
    out_offset: float,
    src_size: tuple[int, int],
    src_offset: tuple[float, float],
    src_scale: float,
    image_size: tuple[int, int],
    align_corners: bool,
) -> torch.Tensor:
    """Normalised ``grid_sample`` grid [N, Ho, Wo, 2], built with device ops only.

    Output pixel j sits at image coordinate ``j * out_scale + out_offset`` (image pixel centres
    are the integers 0..W-1); image coordinate x is source pixel ``x * src_scale + src_offset``
    (per axis, (x, y)). ``inverse`` [N, 3, 3] maps output to input coords, both centred on the
    image centre.
    """
    device, dtype = inverse.device, inverse.dtype
    (out_h, out_w), (src_h, src_w), (h, w) = out_size, src_size, image_size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    xs = torch.arange(out_w, device=device, dtype=dtype) * out_scale + (out_offset - cx)
    ys = torch.arange(out_h, device=device, dtype=dtype) * out_scale + (out_offset - cy)
    a = inverse[:, None, None, :2, :]  # [N, 1, 1, 2, 3]: rows give source x, y
    src = a[..., 0] * xs[:, None] + a[..., 1] * ys[:, None, None] + a[..., 2]  # [N, Ho, Wo, 2]
    x = (src[..., 0] + cx) * src_scale + src_offset[0]
    y = (src[..., 1] + cy) * src_scale + src_offset[1]
    if align_corners:  # -1 and 1 are the centres of the corner pixels
        return torch.stack([2 * x / (src_w - 1) - 1, 2 * y / (src_h - 1) - 1], dim=-1)
    return torch.stack([(2 * x + 1) / src_w - 1, (2 * y + 1) / src_h - 1], dim=-1)


def warp_centred(
    images: torch.Tensor, matrix: torch.Tensor, antialias: bool = True
) -> torch.Tensor:
    """Warp images [N, C, H, W] by forward transforms [N, 3, 3] in pixel units about the image
    centre; the area outside the image is filled by reflection about the border pixel centres.

    antialias=True (ADA's geometric ops): reflect-pad, upsample 2x with sym6, bilinear-sample,
    downsample 2x with sym6. antialias=False: one bilinear sample at 1x (exact for blits: flips,
    90-degree rotations and integer translations land on pixel centres). Twice differentiable
    wrt the images; no host sync.
    """
    n, _, h, w = images.shape
    inverse = _affine_inverse(matrix.float())
    if not antialias:
        # align_corners=True reflection mirrors about the border pixel centres (as F.pad reflect).
        grid = _source_grid(inverse, (h, w), 1.0, 0.0, (h, w), (0.0, 0.0), 1.0, (h, w), True)
        return grid_sample(images, grid.to(images.dtype), "reflection", align_corners=True)
    # Reflect-pad by the filter reach (capped: reflect needs pad < size), upsample, and drop the
    # upsampled border that the filter's zero padding touched; further out, grid_sample reflects
    # (only invented border content depends on that choice).
    py, px = min(2 * FILTER_PAD, h - 1), min(2 * FILTER_PAD, w - 1)
    padded = torch.nn.functional.pad(images, [px, px, py, py], mode="reflect")
    trim = 2 * FILTER_PAD
    up = upsample2x(padded)[:, :, trim:-trim, trim:-trim]
    # upsample2x puts padded coordinate q at 2q + UP_OFFSET: image x is up pixel
    # 2 (x + pad) + UP_OFFSET - trim.
    src_offset = (2 * px + UP_OFFSET - trim, 2 * py + UP_OFFSET - trim)
    # Sample at 2x over the image plus a FILTER_PAD margin (output pixel j is image coordinate
    # (j - UP_OFFSET) / 2 - FILTER_PAD): downsample2x(crop=FILTER_PAD) of it is exactly H x W.
    out_size = (2 * (h + 2 * FILTER_PAD), 2 * (w + 2 * FILTER_PAD))
    grid = _source_grid(
        inverse,
        out_size,
        0.5,
        -UP_OFFSET / 2 - FILTER_PAD,
        (up.shape[2], up.shape[3]),
        src_offset,
        2.0,
        (h, w),
        False,
    )
    sampled = grid_sample(up, grid.to(images.dtype), "reflection")
    return downsample2x(sampled, crop=FILTER_PAD)
