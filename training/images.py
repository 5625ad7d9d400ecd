"""Image helpers for the trainer: [-1, 1] tensors -> uint8 grids written as PNG (atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .networks.export import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C] (the convention of every ganforge output)."""
    x = (images.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid_array(
    images: np.ndarray, cols: int | None = None, upscale_to: int | None = None
) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 [rows*H, cols*W, C] image; optionally nearest-upscaled so
    that each cell is at least ``upscale_to`` pixels (small resolutions stay visible)."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * h : (r + 1) * h, q * w : (q + 1) * w] = images[i]
    if upscale_to and h < upscale_to:
        f = math.ceil(upscale_to / h)
        grid = grid.repeat(f, axis=0).repeat(f, axis=1)
    return grid


def save_png(array: np.ndarray, path: str | Path) -> Path:
    img = Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), suffix=".png")


def grid_latents(count: int, z_dim: int) -> torch.Tensor:
    """The fixed latents of sample grids: seed i -> ``RandomState(i).randn(z_dim)``, the same
    convention as ``ganforge generate --seeds``, so grids and deployed outputs agree."""
    return torch.from_numpy(
        np.stack([np.random.RandomState(i).randn(z_dim) for i in range(count)])
    ).float()


def save_curves(rows: list[dict], keys: list[str], path: str | Path) -> Path | None:
    """Loss curves as a PNG (people would rather look at curves than read them)."""
    rows = [r for r in rows if "kimg" in r]
    if len(rows) < 2:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib comes with mlflow; without it, skip the picture
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key in keys:
        pts = [(r["kimg"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), label=key)
    ax.set_xlabel("kimg")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        return atomic_write(path, fig.savefig, suffix=".png")
    finally:
        plt.close(fig)
