"""Reading data_prep shards for training (implementation follows)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class DataConfig:
    manifest: str | None = None
    """Manifest file or folder/URL from ``ganforge prep`` (None: the ``prep.out`` of this config)."""
    shuffle_buffer: int = 2000
    """Samples in the WebDataset shuffle buffer per worker (0: no shuffle)."""
    xflip: bool = False
    """Mirror real images at random (doubles the effective dataset)."""
    num_workers: int = 2
    """DataLoader worker processes per rank (decoding happens there; 0: in the main process)."""

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer: must be >= 0, got {self.shuffle_buffer}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")
