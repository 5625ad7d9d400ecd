"""Restoring images with a generator: inpainting and super-resolution, both by projection.

- ``inpaint``: project the image on its *known* pixels only (``deploy.project`` with a mask), so
  the generator fills the hole with whatever its latent space says fits the rest; then composite.
  Known pixels are copied from the input untouched; inside the hole the generated pixels get a
  feathered seam correction: the colour offset between input and generation along the hole's
  border (a normalised Gaussian blur of ``known * (input - generated)``) is added, fading into
  the hole with a Gaussian feather of ``feather`` px, so no step shows at the border even when
  the projection is slightly off in brightness. Mask convention as OpenCV's ``inpaint``: non-zero
  (white) = the hole to fill.
- ``upscale``: PULSE (Menon et al. 2020, "PULSE: Self-Supervised Photo Upsampling via Latent
  Space Exploration"): search the latent whose high-resolution output, *downscaled* to the input
  size, matches the input; the result is a sharp image that is consistent with the input by
  construction (its downscaled version reproduces it), though not necessarily the true one. The
  downscaler is area averaging (box filter), the image formation model ``ganforge upscale``
  assumes; the search is NVlabs' projector (not PULSE's spherical constraint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.networks.samples import to_uint8

from .generator import LoadedGenerator
from .project import ProjectConfig, Projection, project
from .projection_io import as_batch, to_tensor


@dataclass
class Restoration:
    """Restored images and the projection behind them."""

    images: np.ndarray
    """uint8 [N, R, R, C]: the result (inpainted composite, or upscaled image)."""
    generated: np.ndarray
    """uint8 [N, R, R, C]: the generator's raw image of the found latent."""
    projection: Projection


def load_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A mask image -> bool [H, W], True in the hole (non-zero/white pixels, as OpenCV)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mask file")
    try:
        img = Image.open(path).convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable mask image ({exc})") from None
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(img) > 127


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(
        F.pad(x, [radius, radius, 0, 0], mode="replicate"),
        k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
        groups=c,
    )
    return F.conv2d(
        F.pad(x, [0, 0, radius, radius], mode="replicate"),
        k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
        groups=c,
    )


def composite(
    images: np.ndarray, generated: np.ndarray, holes: np.ndarray, feather: float
) -> np.ndarray:
    """Known pixels from ``images``, hole pixels from ``generated`` + the feathered seam offset.

    images, generated: uint8 [N, H, W, C]; holes: bool [N, H, W]; feather: px (0: plain paste).
    """
    known = torch.from_numpy((~holes).astype(np.float32))[:, None]
    x = to_tensor(images, torch.device("cpu"))
    g = to_tensor(generated, torch.device("cpu"))
    fill = g
    if feather > 0:
        spread_k = _gaussian_blur(known, feather)
        offset = _gaussian_blur(known * (x - g), feather) / spread_k.clamp_min(1e-6)
        weight = (2 * spread_k).clamp(max=1.0)  # ~1 at the border, fading to 0 inside the hole
        fill = g + weight * offset
    out = to_uint8(known * x + (1 - known) * fill)
    # Bit-exact known pixels (no float round trip).
    return np.where(holes[..., None], out, images)


def inpaint(
    lg: LoadedGenerator,
    images: np.ndarray,
    holes: np.ndarray,
    cfg: ProjectConfig | None = None,
    *,
    feather: float = 1.5,
    labels=None,
) -> Restoration:
    """Fill ``holes`` (bool [N, R, R] or [R, R], True = unknown) of uint8 images [N, R, R, C]."""
    images = as_batch(images, "images")
    holes = np.asarray(holes).astype(bool)
    holes = holes[None] if holes.ndim == 2 else holes
    if holes.shape != images.shape[:3]:
        raise ValueError(
            f"mask: shape {list(holes.shape[1:])} does not match the image's {list(images.shape[1:3])}"
        )
    if feather < 0:
        raise ValueError(f"feather: must be >= 0 px, got {feather}")
    if holes.all(axis=(1, 2)).any():
        raise ValueError("mask: covers the whole image; nothing is known to project on")
    known = (~holes).astype(np.float32)
    # Unknown pixels are zeroed in the target too, so nothing of them can leak into the fit.
    target = np.where(holes[..., None], np.uint8(128), images)
    projection = project(lg, target, cfg, labels=labels, masks=known)
    out = composite(images, projection.images, holes, feather)
    return Restoration(images=out, generated=projection.images, projection=projection)


def downscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """The image formation model of ``upscale``: area averaging to size x size."""
    return F.interpolate(images, size=(size, size), mode="area")


def upscale(
    lg: LoadedGenerator,
    images: np.ndarray,
    cfg: ProjectConfig | None = None,
    *,
    labels=None,
) -> Restoration:
    """Low-resolution uint8 [N, h, h, C] -> [N, R, R, C] at the generator's resolution R,
    where R / h is an integer >= 1 (PULSE-style; see the module doc)."""
    images = as_batch(images, "image")
    n, h, w, _ = images.shape
    if h != w:
        raise ValueError(f"image: must be square, got {w}x{h}; crop it first")
    if h > lg.resolution or lg.resolution % h:
        raise ValueError(
            f"image: {h}x{h} px cannot be upscaled to the generator's {lg.resolution} px "
            f"(the factor must be a whole number >= 1); valid sizes: "
            + ", ".join(str(lg.resolution // f) for f in (1, 2, 4, 8, 16) if lg.resolution % f == 0)
        )
    projection = project(lg, images, cfg, labels=labels, observe=lambda x: downscale(x, h))
    return Restoration(images=projection.images, generated=projection.images, projection=projection)
