"""Differentiable augmentation for GANs, applied identically to reals and fakes before D.

- DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"):
  ``color`` (brightness, saturation, contrast), ``translation`` (up to 1/8 of the size, zero
  padding), ``cutout`` (a square of half the size), always on, per sample.
- ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data", sec. 2-3
  and appendix B): every op is applied per sample with probability p (times its multiplier). The
  geometric ops (x-flip, 90-degree rotation, integer translation, isotropic scale, rotation,
  anisotropic scale, fractional translation) are composed into ONE 3x3 matrix per sample and
  executed as a single reflect-padded warp, the color ops (brightness, contrast, luma flip, hue,
  saturation) into ONE 4x4 color matrix, as NVlabs does: one interpolation instead of seven, and
  distributions exactly as the paper's. With any general geometric op (``g``) the warp runs
  alias-free at 2x with the sym6 wavelet (:mod:`training.warp`, as NVlabs); a blit-only pipeline
  (``b``) warps at 1x, where its ops are exact pixel moves. Not implemented: the image-space
  filtering / noise ops (pipelines ``f``, ``n``).
- :class:`AdaController`: the adaptive-p heuristic r_t = E[sign(D(real))] (ADA eq. 1), with p a
  0-dim tensor on the training device.

Nothing here waits for the device: p may be a device tensor, every matrix and constant is built
on the images' device, and the controller updates p with tensor ops (read it on the host once
per tick with :meth:`AdaController.p_value`).

All functions are differentiable wrt the images (including double backward, for R1 through the
augmentation), keep shape and dtype, work on images in [-1, 1], and are the exact identity at
p = 0. Color ops that need 3 channels (hue, saturation) are skipped for 1-channel images.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .warp import warp_centred


@dataclass(kw_only=True)
class AugmentConfig:
    mode: Literal["none", "diffaugment", "ada", "fixed"] = "ada"
    """none: no augmentation; diffaugment: DiffAugment ``policy`` always on; ada: ADA pipeline
    with adaptive p; fixed: ADA pipeline at constant p."""
    policy: str = "color,translation,cutout"
    """DiffAugment policies, comma-separated subset of color, translation, cutout."""
    pipeline: str = "bgc"
    """ADA pipeline preset: b (blit: xflip, rot90, int translation), g (general geometric),
    c (color), f (image-space filtering is not implemented), co (cutout); e.g. bgc, bgccutout."""
    p: float = 0.0
    """Initial augment probability (ada) or the constant one (fixed)."""
    target: float = 0.6
    """ADA target for E[sign(D(real))]."""
    ada_kimg: float = 500.0
    """ADA speed: kimg for p to move from 0 to 1."""
    interval: int = 4
    """Adjust p every this many D steps."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p: must be in [0, 1], got {self.p}")
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target: must be in (0, 1), got {self.target}")
        if self.ada_kimg <= 0:
            raise ValueError(f"ada_kimg: must be positive, got {self.ada_kimg}")
        if self.interval <= 0:
            raise ValueError(f"interval: must be a positive integer, got {self.interval}")
        try:
            parse_pipeline(self.pipeline)
        except ValueError as exc:
            raise ValueError(f"pipeline: {exc}") from None
        valid = {"color", "translation", "cutout"}
        bad = [p for p in self.policy.split(",") if p.strip() and p.strip() not in valid]
        if bad:
            raise ValueError(
                f"policy: unknown DiffAugment policy {bad[0]!r}; valid: color, translation, cutout"
            )


def _rand(shape: list[int], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, device=like.device, dtype=torch.float32, generator=generator)


def _randn(shape: list[int], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, device=like.device, dtype=torch.float32, generator=generator)


# --------------------------------------------------------------------------------------------
# DiffAugment (Zhao et al. 2020; the official PyTorch code's ops and ranges)


def _diff_color(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    x = x + (_rand([n, 1, 1, 1], x, gen).to(x.dtype) - 0.5)  # brightness: +U(-0.5, 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand([n, 1, 1, 1], x, gen).to(x.dtype) * 2) + mean  # saturation: x U(0, 2)
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (
        _rand([n, 1, 1, 1], x, gen).to(x.dtype) + 0.5
    ) + mean  # contrast: x U(.5, 1.5)


def _diff_translation(
    x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.125
) -> torch.Tensor:
    # Shift by an integer in [-ratio*size, ratio*size] per sample and axis; pixels shifted in are 0.
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, [n, 1], device=x.device, generator=gen)
    tx = torch.randint(-sx, sx + 1, [n, 1], device=x.device, generator=gen)
    # Index into a 1-pixel zero border; clamping lands out-of-range sources on that border.
    iy = (torch.arange(h, device=x.device) + ty + 1).clamp(0, h + 1)  # [N, H]
    ix = (torch.arange(w, device=x.device) + tx + 1).clamp(0, w + 1)  # [N, W]
    padded = nn.functional.pad(x, [1, 1, 1, 1])
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, :, iy[:, :, None], ix[:, None, :]].permute(
        0, 3, 1, 2
    )  # [N, H, W, C] -> NCHW


def _diff_cutout(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    # Zero a (ratio*H x ratio*W) box centred at a uniform random pixel (clipped at the borders).
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), [n, 1], device=x.device, generator=gen) - ch // 2
    ox = torch.randint(0, w + (1 - cw % 2), [n, 1], device=x.device, generator=gen) - cw // 2
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_y = (ys >= oy) & (ys < oy + ch)  # [N, H]
    in_x = (xs >= ox) & (xs < ox + cw)  # [N, W]
    keep = ~(in_y[:, :, None] & in_x[:, None, :])
    return x * keep[:, None].to(x.dtype)


DIFF_AUGMENT_OPS = {"color": _diff_color, "translation": _diff_translation, "cutout": _diff_cutout}


def diff_augment(
    images: torch.Tensor,
    policy: str = "color,translation,cutout",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DiffAugment: images [N, C, H, W] -> [N, C, H, W], the policies applied in the given order.

    policy: comma-separated subset of color, translation, cutout ("" = identity).
    """
    for name in policy.split(","):
        name = name.strip()
        if not name:
            continue
        if name not in DIFF_AUGMENT_OPS:
            raise ValueError(
                f"policy: unknown DiffAugment policy {name!r}; valid: {', '.join(DIFF_AUGMENT_OPS)}"
            )
        images = DIFF_AUGMENT_OPS[name](images, generator)
    return images.contiguous()


# --------------------------------------------------------------------------------------------
# ADA


# Op strengths, NVlabs AugmentPipe defaults (ADA appendix B).
XINT_MAX = 0.125  # integer translation: U(-0.125, 0.125) of the size, rounded to pixels
SCALE_STD = 0.2  # isotropic scale: lognormal, 2 ** N(0, 0.2)
ROTATE_MAX = 1.0  # rotation: U(-pi, pi)
ANISO_STD = 0.2  # anisotropic scale: 2 ** N(0, 0.2) on x, its inverse on y
XFRAC_STD = 0.125  # fractional translation: N(0, 0.125) of the size
BRIGHTNESS_STD = 0.2  # brightness: + N(0, 0.2)
CONTRAST_STD = 0.5  # contrast: x 2 ** N(0, 0.5)
HUE_MAX = 1.0  # hue rotation around the luma axis: U(-pi, pi)
SATURATION_STD = 1.0  # saturation: x 2 ** N(0, 1) off the luma axis
CUTOUT_SIZE = 0.5  # cutout: a (0.5 H x 0.5 W) rectangle

BLIT = ("xflip", "rotate90", "xint")
GEOM = ("scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
ADA_OPS = (*BLIT, *GEOM, *COLOR, "cutout")


@functools.lru_cache(maxsize=32)
def parse_pipeline(pipeline: str) -> frozenset[str]:
    """ADA pipeline string -> set of enabled ops.

    Tokens, left to right: ``b`` blit (xflip, rotate90, xint), ``g`` general geometric (scale,
    rotate, aniso, xfrac), ``c`` color (brightness, contrast, lumaflip, hue, saturation),
    ``cutout`` or ``co`` cutout; e.g. ``bgc`` (the paper's default), ``bgccutout``, ``bg``.
    ``f`` (image-space filtering) and ``n`` (noise) are not implemented.
    """
    ops: set[str] = set()
    i = 0
    while i < len(pipeline):
        if pipeline.startswith("cutout", i) or pipeline.startswith("co", i):
            ops.add("cutout")
            i += 6 if pipeline.startswith("cutout", i) else 2
            continue
        ch = pipeline[i]
        if ch == "b":
            ops.update(BLIT)
        elif ch == "g":
            ops.update(GEOM)
        elif ch == "c":
            ops.update(COLOR)
        elif ch in "fn":
            raise ValueError(
                f"ADA pipeline {pipeline!r}: {ch!r} (filter/noise ops) is not implemented; use b, g, c, cutout"
            )
        else:
            raise ValueError(
                f"ADA pipeline {pipeline!r}: unknown token at {pipeline[i:]!r}; valid: b, g, c, cutout (co)"
            )
        i += 1
    return frozenset(ops)


def _mat3(rows: list[list[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    """Build [N, 3, 3] (or 4x4) matrices from rows of per-sample [N] tensors / floats."""
    n = like.shape[0]
    return torch.stack(
        [
            torch.stack(
                [
                    e if torch.is_tensor(e) else torch.full([n], float(e), device=like.device)
                    for e in row
                ],
                dim=-1,
            )
            for row in rows
        ],
        dim=-2,
    )


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _mat3([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _mat3([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    c, s = theta.cos(), theta.sin()
    return _mat3([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


def _where(cond_p: torch.Tensor, value: torch.Tensor, default: float) -> torch.Tensor:
    return torch.where(cond_p, value, torch.full_like(value, default))


def _geometric_matrix(
    n: int,
    h: int,
    w: int,
    p: float | torch.Tensor,
    ops: frozenset[str],
    like: torch.Tensor,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """Forward [N, 3, 3] transform in pixel units about the image centre (ops composed left to
    right in NVlabs' order; each op is identity for a sample unless rand < p)."""
    G = torch.eye(3, device=like.device).expand(n, 3, 3)
    one = torch.ones([n], device=like.device)
    if "xflip" in ops:
        i = torch.floor(_rand([n], like, gen) * 2)
        i = _where(_rand([n], like, gen) < p, i, 0)
        G = _scale2d(1 - 2 * i, one) @ G
    if "rotate90" in ops:
        i = torch.floor(_rand([n], like, gen) * 4)
        i = _where(_rand([n], like, gen) < p, i, 0)
        G = _rotate2d(math.pi / 2 * i) @ G
    if "xint" in ops:
        t = (_rand([n, 2], like, gen) * 2 - 1) * XINT_MAX
        t = _where(_rand([n, 1], like, gen) < p, t, 0)
        G = _translate2d(torch.round(t[:, 0] * w), torch.round(t[:, 1] * h)) @ G
    if "scale" in ops:
        s = torch.exp2(_randn([n], like, gen) * SCALE_STD)
        s = _where(_rand([n], like, gen) < p, s, 1)
        G = _scale2d(s, s) @ G
    # Rotation happens before and after the anisotropic scale, each with p_rot such that
    # P(pre or post) = p (ADA appendix B).
    if torch.is_tensor(p):
        p_rot = 1 - torch.sqrt((1 - p).clamp(0, 1))
    else:
        p_rot = 1 - math.sqrt(min(max(1 - p, 0.0), 1.0))
    if "rotate" in ops:
        theta = (_rand([n], like, gen) * 2 - 1) * math.pi * ROTATE_MAX
        G = _rotate2d(_where(_rand([n], like, gen) < p_rot, theta, 0)) @ G
    if "aniso" in ops:
        s = torch.exp2(_randn([n], like, gen) * ANISO_STD)
        s = _where(_rand([n], like, gen) < p, s, 1)
        G = _scale2d(s, 1 / s) @ G
    if "rotate" in ops:
        theta = (_rand([n], like, gen) * 2 - 1) * math.pi * ROTATE_MAX
        G = _rotate2d(_where(_rand([n], like, gen) < p_rot, theta, 0)) @ G
    if "xfrac" in ops:
        t = _randn([n, 2], like, gen) * XFRAC_STD
        t = _where(_rand([n, 1], like, gen) < p, t, 0)
        G = _translate2d(t[:, 0] * w, t[:, 1] * h) @ G
    return G


def _color_matrix(
    n: int,
    channels: int,
    p: float | torch.Tensor,
    ops: frozenset[str],
    like: torch.Tensor,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """[N, 4, 4] affine color transform in RGB (homogeneous), NVlabs' order."""
    eye = torch.eye(4, device=like.device)
    C = eye.expand(n, 4, 4)
    zero, one = torch.zeros([n], device=like.device), torch.ones([n], device=like.device)
    # Luma axis (1, 1, 1, 0) / sqrt(3), built on the device (no host-to-device copy).
    v = torch.cat([torch.full([3], 1 / math.sqrt(3), device=like.device), zero.new_zeros(1)])
    vv = torch.outer(v, v)
    if "brightness" in ops:
        b = _randn([n], like, gen) * BRIGHTNESS_STD
        b = _where(_rand([n], like, gen) < p, b, 0)
        C = _mat3([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]], b) @ C
    if "contrast" in ops:
        c = torch.exp2(_randn([n], like, gen) * CONTRAST_STD)
        c = _where(_rand([n], like, gen) < p, c, 1)
        C = _mat3([[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]], c) @ C
    if "lumaflip" in ops:
        i = torch.floor(_rand([n, 1, 1], like, gen) * 2)
        i = _where(_rand([n, 1, 1], like, gen) < p, i, 0)
        C = (eye - 2 * vv * i) @ C  # Householder reflection of the luma axis
    if "hue" in ops and channels > 1:
        theta = (_rand([n], like, gen) * 2 - 1) * math.pi * HUE_MAX
        theta = _where(_rand([n], like, gen) < p, theta, 0)
        s, c = theta.sin(), theta.cos()
        cc, k = 1 - c, 1 / math.sqrt(3)  # rotation about the unit axis (k, k, k) (Rodrigues)
        a, o = k * k * cc + c, k * k * cc
        C = (
            _mat3(
                [
                    [a, o - k * s, o + k * s, zero],
                    [o + k * s, a, o - k * s, zero],
                    [o - k * s, o + k * s, a, zero],
                    [zero, zero, zero, one],
                ],
                theta,
            )
            @ C
        )
    if "saturation" in ops and channels > 1:
        s = torch.exp2(_randn([n, 1, 1], like, gen) * SATURATION_STD)
        s = _where(_rand([n, 1, 1], like, gen) < p, s, 1)
        C = (vv + (eye - vv) * s) @ C
    return C


def ada_augment(
    images: torch.Tensor,
    p: float | torch.Tensor,
    pipeline: str = "bgc",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ADA augmentation: images [N, C, H, W] in [-1, 1] -> same shape/dtype.

    p: augmentation probability in [0, 1]: a float or a 0-dim tensor on the images' device (the
    controller's p; no host sync, no recompile under ``torch.compile`` as p changes). At a Python
    ``p == 0`` the input is returned as is; at a tensor p = 0 the output equals the input exactly
    (every sample that draws no op is passed through untouched).
    generator: optional ``torch.Generator`` on the images' device, for reproducible draws.
    """
    if not torch.is_tensor(p) and p == 0:
        return images
    return _ada_augment(images, p, parse_pipeline(pipeline), generator)


def _ada_augment(
    images: torch.Tensor,
    p: float | torch.Tensor,
    ops: frozenset[str],
    generator: torch.Generator | None,
) -> torch.Tensor:
    if not torch.is_tensor(p) and p == 0:
        return images
    n, channels, h, w = images.shape
    out = images

    if ops & {*BLIT, *GEOM}:
        G = _geometric_matrix(n, h, w, p, ops, images, generator)
        # Alias-free 2x warp when general geometric ops are on; blits alone land on pixel
        # centres, where the 1x warp is exact. Warped in float32 (the grid needs the precision).
        warped = warp_centred(out.float(), G, antialias=bool(ops & set(GEOM))).to(out.dtype)
        untouched = (G == torch.eye(3, device=G.device)).flatten(1).all(dim=1)
        out = torch.where(untouched[:, None, None, None], out, warped)

    if ops & set(COLOR):
        C = _color_matrix(n, channels, p, ops, images, generator)
        untouched = (C == torch.eye(4, device=C.device)).flatten(1).all(dim=1)
        C = C.to(out.dtype)
        before = out
        flat = out.reshape(n, channels, h * w)
        if channels == 3:
            flat = C[:, :3, :3] @ flat + C[:, :3, 3:]
        elif channels == 1:
            # Grayscale: the luma-preserving part of the transform, averaged over R, G, B (NVlabs).
            C1 = C[:, :3, :].mean(dim=1, keepdim=True)  # [N, 1, 4]
            flat = flat * C1[:, :, :3].sum(dim=2, keepdim=True) + C1[:, :, 3:]
        out = flat.reshape(n, channels, h, w)
        out = torch.where(untouched[:, None, None, None], before, out)

    if "cutout" in ops:
        size = _where(
            _rand([n, 1, 1], images, generator) < p,
            torch.full([n, 1, 1], CUTOUT_SIZE, device=images.device),
            0,
        )
        centre = _rand([n, 2, 1, 1], images, generator)
        ys = (torch.arange(h, device=images.device).reshape(1, -1, 1) + 0.5) / h
        xs = (torch.arange(w, device=images.device).reshape(1, 1, -1) + 0.5) / w
        keep = ((xs - centre[:, 0]).abs() >= size / 2) | (
            (ys - centre[:, 1]).abs() >= size / 2
        )  # [N, H, W]
        out = out * keep[:, None].to(out.dtype)
    return out


class AdaptiveAugment(nn.Module):
    """ADA pipeline as a module: ``forward(images, p) -> images`` (see :func:`ada_augment`)."""

    def __init__(self, pipeline: str = "bgc") -> None:
        super().__init__()
        self.pipeline = pipeline
        self.ops = parse_pipeline(pipeline)

    def forward(
        self,
        images: torch.Tensor,
        p: float | torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return _ada_augment(images, p, self.ops, generator)

    def extra_repr(self) -> str:
        return f"pipeline={self.pipeline!r}, ops={sorted(self.ops)}"


def augment(
    images: torch.Tensor,
    cfg: AugmentConfig,
    p: float | torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The single entry point: dispatch on ``cfg.mode``.

    none: identity; diffaugment: :func:`diff_augment` with ``cfg.policy`` (p is ignored: always
    on); ada / fixed: :func:`ada_augment` with ``cfg.pipeline`` at probability p (the controller's
    p for ada, ``cfg.p`` for fixed; the caller passes it).
    """
    if cfg.mode == "none":
        return images
    if cfg.mode == "diffaugment":
        return diff_augment(images, cfg.policy, generator)
    return ada_augment(images, p, cfg.pipeline, generator)


class AdaController:
    """Adaptive p (ADA sec. 3): r_t = E[sign(D(real))], p moves towards keeping r_t at target.

    The single owner of p: a 0-dim float32 tensor on the training device, updated in place with
    tensor ops (no host sync), so whoever holds ``ada.p`` always sees the current value. Usage in
    the trainer (the controller never talks to other processes):

        ada = AdaController.from_config(cfg.augment, device=device)
        images = augment(images, cfg.augment, ada.p)  # every D call
        ada.accumulate(real_logits)            # every D step, on the (augmented) reals' logits
        if d_steps % ada.interval == 0:
            stats = ada.pending()              # device tensor [sum of signs, count]; all-reduce(SUM)
            ada.update(stats)                  # moves p, clears the accumulators
        log(p=ada.p_value())                   # once per tick: the one host read

    Each update moves p by ``sign(r_t - target) * images / (ada_kimg * 1000)``, where images is
    the (global) number of reals accumulated since the last update, i.e. batch * interval, so p
    can go from 0 to 1 in ada_kimg thousand images. p stays in [0, 1]. All arithmetic is float32
    on the device; the sums are of +-1 and counts, exact below 2**24 images per update.
    """

    def __init__(
        self,
        target: float = 0.6,
        ada_kimg: float = 500.0,
        interval: int = 4,
        p: float = 0.0,
        device: torch.device | str | None = None,
    ) -> None:
        self.target, self.ada_kimg, self.interval = float(target), float(ada_kimg), int(interval)
        self.p = torch.full([], float(p), dtype=torch.float32, device=device)
        self._stats = torch.zeros(2, dtype=torch.float32, device=device)  # [sum of signs, count]
        self._rt = torch.full([], float("nan"), dtype=torch.float32, device=device)

    @classmethod
    def from_config(
        cls, cfg: AugmentConfig, device: torch.device | str | None = None
    ) -> AdaController:
        return cls(
            target=cfg.target, ada_kimg=cfg.ada_kimg, interval=cfg.interval, p=cfg.p, device=device
        )

    def to(self, device: torch.device | str) -> AdaController:
        """Move p and the accumulators (once, at setup: a copy)."""
        self.p = self.p.to(device)
        self._stats, self._rt = self._stats.to(device), self._rt.to(device)
        return self

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add sign(real_logits) [N, 1] to the running sums (device ops only)."""
        signs = real_logits.detach().float().sign()
        self._stats += torch.stack([signs.sum(), torch.ones_like(signs).sum()])

    def pending(self) -> torch.Tensor:
        """-> float32 device tensor [sum_sign, count] of this process since the last update."""
        return self._stats.clone()

    @torch.no_grad()
    def update(self, summed_stats: torch.Tensor | None = None) -> torch.Tensor:
        """Move p from ``summed_stats`` ([sum_sign, count] over all processes, on p's device;
        default: the local :meth:`pending`) and clear the accumulators. Returns ``self.p``."""
        stats = self._stats if summed_stats is None else summed_stats.to(self._stats.dtype)
        total, count = stats[0], stats[1]
        # sign(r_t - target) without dividing: 0 when nothing was accumulated (count = 0).
        step = torch.sign(total - self.target * count) * count / (self.ada_kimg * 1000)
        self._rt = torch.where(count > 0, total / count.clamp(min=1), self._rt)
        self.p.copy_((self.p + step).clamp(0, 1))
        self._stats.zero_()
        return self.p

    def p_value(self) -> float:
        """p as a float, for logging (a host read: once per tick)."""
        return float(self.p)

    @property
    def last_rt(self) -> float | None:
        """r_t of the last update with data (a host read, for logging); None before any."""
        rt = float(self._rt)
        return None if math.isnan(rt) else rt

    def state_dict(self) -> dict[str, float]:
        """Plain floats (p and the pending sums; float32 values, so they survive JSON exactly)."""
        total, count = (float(v) for v in self._stats.cpu())
        return {"p": float(self.p), "pending_sum": total, "pending_count": count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.p.fill_(float(state["p"]))
        self._stats[0] = float(state.get("pending_sum", 0.0))
        self._stats[1] = float(state.get("pending_count", 0.0))
