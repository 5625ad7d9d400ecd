"""Image helpers for the trainer: sample grids and loss curves written as PNG (atomically).

``to_uint8``, ``grid_array`` (``make_grid``) and the seed latents live in
``training.networks.samples`` (shared with ``deploy``); they are re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .networks.export import atomic_write
from .networks.samples import make_grid as grid_array
from .networks.samples import seeds_to_latents, to_uint8

__all__ = ["grid_array", "grid_latents", "save_curves", "save_png", "to_uint8"]


def save_png(array: np.ndarray, path: str | Path) -> Path:
    img = Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), suffix=".png")


def grid_latents(count: int, z_dim: int) -> torch.Tensor:
    """The fixed latents of sample grids: seed i -> ``RandomState(i).randn(z_dim)``, the same
    convention as ``ganforge generate --seeds``, so grids and deployed outputs agree."""
    return torch.from_numpy(seeds_to_latents(range(count), z_dim))


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
