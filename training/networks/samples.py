"""What a generator's samples are outside the network: the latent of a seed, uint8 images, grids.

The one home of these conventions for the trainer (sample grids, evaluation), ``deploy`` (CLI,
server, exports) and the MLflow pyfunc (which vendors ``training/networks``), so a seed means the
same image on every path:

- Latent of seed ``s``: the first ``z_dim`` normals of ``np.random.RandomState(s)`` as float32,
  as NVlabs' ``gen_images.py`` does; later draws of the same stream (e.g. a class for
  evaluation) continue it.
- Pixels: ``(x * 127.5 + 128).clamp(0, 255)`` truncated to uint8 (x in about [-1, 1]).
- Grids: row-major, blank cells black.

Imports only numpy and torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch


def latent_stream(seed: int) -> np.random.RandomState:
    """The random stream of ``seed``: its first ``z_dim`` normals are the seed's latent."""
    return np.random.RandomState(int(seed) % 2**32)


def seeds_to_latents(seeds: Iterable[int], z_dim: int) -> np.ndarray:
    """-> z: float32 [N, z_dim]; row i is ``RandomState(seeds[i]).randn(z_dim)``."""
    rows = [latent_stream(s).randn(z_dim) for s in seeds]
    return np.stack(rows).astype(np.float32) if rows else np.zeros([0, z_dim], np.float32)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in about [-1, 1] -> uint8 [N, C, H, W] on the same device (traceable)."""
    return (images.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in about [-1, 1] -> uint8 numpy [N, H, W, C] (every ganforge image output)."""
    return quantize(images).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(
    images: np.ndarray, cols: int | None = None, pad: int = 0, upscale_to: int | None = None
) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 image [rows*H, cols*W, C] (row-major; blanks are black).

    ``pad``: black pixels between cells. ``upscale_to``: nearest-upscale the grid so that each
    cell is at least this many pixels high (keeps 16 px samples visible; None: off).
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images: expected [N, H, W, C], got shape {list(images.shape)}")
    n, h, w, c = images.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.zeros([rows * (h + pad) - pad, cols * (w + pad) - pad, c], dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = img
    if upscale_to and 0 < h < upscale_to:
        f = math.ceil(upscale_to / h)
        grid = grid.repeat(f, axis=0).repeat(f, axis=1)
    return grid
