"""The built-in unpaired translation demo: photos (domain A) vs the same kind of photos under a
colour grade (domain B), rendered from scikit-learn's two bundled photographs; no download.

scikit-learn ships ``china.jpg`` and ``flower.jpg`` (427x640) inside its wheel
(``sklearn.datasets.load_sample_images``). Each photo is cut into a grid of cells, coloured like
a checkerboard: domain A's crops come only from the "white" cells, domain B's only from the
"black" ones, so no image region appears in both domains and no (A, B) pair exists, as in
real unpaired data. Several crops per cell (random size, position and mirror) give a few
hundred images per domain.

Domain B's style is a fixed, invertible colour grade (``grade``): the colour channels rotate
(R, G, B) -> (G, B, R), then a gamma of 0.6 brightens the mid-tones. A translator learns it from
unpaired data alone (and its inverse for B -> A); how far a translated image's colour
statistics move from A's towards B's is easy to measure (``colour_distance``).

``write_demo_domains(out)`` writes ``out/A/*.png`` and ``out/B/*.png``; ``ganforge prep`` shards
each folder like any other. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

GAMMA = 0.6
CELL_ROWS, CELL_COLS = 8, 12
MIN_STD = 12.0  # pixel standard deviation a crop should reach (8 tries, then the last one)
VERSION = 2  # of the rendering: a folder written by another version is rendered again


def grade(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> uint8 [..., 3]: the domain-B colour grade (channel rotation + gamma)."""
    x = rgb[..., [1, 2, 0]].astype(np.float64) / 255.0
    return np.round(255.0 * x**GAMMA).clip(0, 255).astype(np.uint8)


def ungrade(rgb: np.ndarray) -> np.ndarray:
    """The inverse of ``grade`` (up to rounding): what a perfect B -> A translator outputs."""
    x = (rgb.astype(np.float64) / 255.0) ** (1.0 / GAMMA)
    return np.round(255.0 * x[..., [2, 0, 1]]).clip(0, 255).astype(np.uint8)


def colour_statistics(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> [6]: per-channel mean and standard deviation in [0, 1]."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return np.concatenate([x.mean(0), x.std(0)])


def colour_distance(images: np.ndarray, reference: np.ndarray) -> float:
    """A simple style distance: L2 between the colour statistics of two sets of uint8 images
    [N, H, W, 3] (0: the same colour distribution to first and second moments)."""
    return float(np.linalg.norm(colour_statistics(images) - colour_statistics(reference)))


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(img, dtype=np.uint8) for img in load_sample_images().images]


def demo_crops(
    *, size: int = 64, per_cell: int = 4, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """-> (domain A crops, domain B crops) as uint8 [size, size, 3] arrays, B already graded."""
    rng = np.random.default_rng(seed)
    domains: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    for photo in _photos():
        height, width = photo.shape[:2]
        cell_h, cell_w = height // CELL_ROWS, width // CELL_COLS
        for row in range(CELL_ROWS):
            for col in range(CELL_COLS):
                domain = (row + col) % 2  # checkerboard: disjoint regions for A and B
                cell = photo[row * cell_h : (row + 1) * cell_h, col * cell_w : (col + 1) * cell_w]
                for _ in range(per_cell):
                    for _attempt in range(8):  # prefer crops with some structure (not flat sky)
                        side = int(
                            rng.integers(min(cell_h, cell_w) * 3 // 4, min(cell_h, cell_w) + 1)
                        )
                        top = int(rng.integers(0, cell_h - side + 1))
                        left = int(rng.integers(0, cell_w - side + 1))
                        crop = cell[top : top + side, left : left + side]
                        if crop.std() >= MIN_STD:
                            break
                    if rng.random() < 0.5:
                        crop = crop[:, ::-1]
                    image = np.asarray(
                        Image.fromarray(np.ascontiguousarray(crop)).resize(
                            (size, size), Image.Resampling.LANCZOS
                        )
                    )
                    domains[domain].append(grade(image) if domain else image)
    return domains


def write_demo_domains(out: str | Path, *, size: int = 64, per_cell: int = 4, seed: int = 0):
    """Write ``out/A/*.png`` (photos) and ``out/B/*.png`` (graded photos); -> (A dir, B dir).
    Reuses a complete earlier output (a ``.done`` marker) so re-running is instant."""
    out = Path(out)
    dirs = (out / "A", out / "B")
    marker = out / ".done"
    expected = f"v{VERSION} size={size} per_cell={per_cell} seed={seed}"
    if marker.is_file() and marker.read_text() == expected:
        return dirs
    a, b = demo_crops(size=size, per_cell=per_cell, seed=seed)
    for folder, images in zip(dirs, (a, b), strict=True):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i:05d}.png")
    marker.write_text(expected)
    return dirs
