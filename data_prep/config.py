"""Options of ``ganforge prep`` (``prep:`` in a preset)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True)
class PrepConfig:
    source: str = "digits"
    """Input: a folder, .zip/.tar/.tar.gz archive, cifar-10-python.tar.gz, MNIST IDX file, a
    CSV/JSONL list file, or ``digits`` (scikit-learn's built-in handwritten digits)."""
    out: str | None = None
    """Output directory or fsspec URL (None: ``<work_dir>/data/<source name>``)."""
    resolution: int = 32
    """Output side length in pixels, a power of two in 4..2048."""
    channels: Literal[1, 3] = 3
    """3: RGB output; 1: grayscale."""
    transform: Literal["center-crop", "center-crop-wide", "none"] = "center-crop"
    """How non-square/odd-size images become resolution x resolution (none: such images are skipped)."""
    resize_filter: Literal["lanczos", "bicubic", "box"] = "lanczos"
    """Resampling filter (box reproduces published FID setups that used box downsampling)."""
    image_format: Literal["png", "webp", "jpeg"] = "png"
    """Encoding inside the shards: lossless PNG/WebP, or JPEG at ``jpeg_quality``."""
    jpeg_quality: int = 95
    """JPEG quality 1..100 (only for image_format: jpeg)."""
    png_compress_level: int = 1
    """PNG zlib level 0..9 (only for image_format: png): 0 stored, as NVlabs dataset_tool;
    1 fastest that compresses (default); higher: a few % smaller, slower. Pixels never change."""
    fast: bool = False
    """Decode JPEGs at a reduced power-of-two scale (draft) and resize with a reducing gap:
    several x faster on large photos but NOT pixel-identical to the exact path (measured
    difference in docs/benchmarks.md); keep false when FID is compared with published numbers."""
    labels: Literal["auto", "none", "folder"] = "auto"
    """auto: labels when the source has them; folder: first-level subfolder names; none: unlabelled."""
    shard_samples: int = 2000
    """Maximum samples per shard."""
    shard_bytes: int = 1_000_000_000
    """Maximum bytes per shard (0: no byte limit); planned from the encoded size of a probe of
    16 images, so a shard can overshoot when the rest compresses much worse than the probe."""
    min_shards: int = 16
    """At least this many shards when there are enough samples, so that ranks x workers of
    resampled loading read different shards."""
    val_fraction: float = 0.0
    """Fraction of samples held out in ``val-*.tar`` shards (0: none)."""
    seed: int = 0
    """Seed of the global shuffle."""
    workers: int = 0
    """Parallel worker processes (0: all cores)."""
    num_partitions: int = 1
    """Split the input into this many disjoint slices for multi-node prep."""
    partition: int = 0
    """Which slice this job processes (0-based)."""
    max_image_pixels: int = 178_956_970
    """Images with more pixels are skipped as decompression bombs."""
    min_size: int | None = None
    """Image files whose shorter side is below this many pixels are skipped as too small
    (None: resolution / 8; 0: no minimum). The built-in array datasets (digits, CIFAR-10, MNIST)
    are exempt: upscaling them is intended."""

    @property
    def effective_min_size(self) -> int:
        return max(1, self.resolution // 8) if self.min_size is None else self.min_size

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 4 or r > 2048 or r & (r - 1):
            raise ValueError(f"resolution: must be a power of two in 4..2048, got {r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality: must be in 1..100, got {self.jpeg_quality}")
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"png_compress_level: must be in 0..9, got {self.png_compress_level}")
        if self.shard_samples <= 0:
            raise ValueError(f"shard_samples: must be positive, got {self.shard_samples}")
        if self.shard_bytes < 0:
            raise ValueError(f"shard_bytes: must be >= 0, got {self.shard_bytes}")
        if self.min_shards <= 0:
            raise ValueError(f"min_shards: must be positive, got {self.min_shards}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.workers < 0:
            raise ValueError(f"workers: must be >= 0 (0: all cores), got {self.workers}")
        if self.max_image_pixels <= 0:
            raise ValueError(f"max_image_pixels: must be positive, got {self.max_image_pixels}")
        if self.min_size is not None and self.min_size < 0:
            raise ValueError(f"min_size: must be >= 0 (0: no minimum), got {self.min_size}")
        if self.num_partitions < 1:
            raise ValueError(f"num_partitions: must be >= 1, got {self.num_partitions}")
        if not 0 <= self.partition < self.num_partitions:
            raise ValueError(
                f"partition: must be in 0..{self.num_partitions - 1} (num_partitions), got {self.partition}"
            )
