"""Reading data_prep shards for training and evaluation (WebDataset).

Three ways to read the shards listed in a manifest:

- ``resampled`` (training default): every rank and DataLoader worker draws shards *with
  replacement* from its own seeded stream, so there are no epochs, no uneven-split stalls and no
  coordination between ranks. Shards are globally shuffled by data_prep, so each one is a random
  sample of the dataset; a shuffle buffer mixes samples further.
- ``deterministic``: every rank reads the *same* seeded stream, groups it into global batches and
  keeps only its own micro-batches. Costs world-size x decoding, but a run gives the same result
  on any number of processes (used to verify distributed training; see docs/distributed.md).
- ``epoch`` (evaluation): one pass, each shard read by exactly one (rank, worker); partial last
  batches are kept, so uneven shard counts never deadlock - callers gather with padding.

Samples decode in DataLoader workers to ``uint8 [C, H, W]`` tensors plus an ``int64`` label (-1
when unlabelled); the trainer moves batches to the device and scales them to [-1, 1].
"""

from __future__ import annotations

import hashlib
import io
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_prep.manifest import Manifest

IMAGE_KEYS = ("png", "webp", "jpg", "jpeg")


@dataclass(kw_only=True)
class DataConfig:
    manifest: str | None = None
    """Manifest file or folder/URL from ``ganforge prep`` (None: the ``prep.out`` of this config)."""
    loader: Literal["resampled", "deterministic"] = "resampled"
    """resampled: independent shard streams per rank/worker (scales to any cluster);
    deterministic: identical results on any world size, at world-size x decoding cost."""
    shuffle_buffer: int = 2000
    """Samples in the shuffle buffer per worker (0: no shuffle)."""
    xflip: bool = False
    """Mirror real images at random (doubles the effective dataset)."""
    num_workers: int = 2
    """DataLoader worker processes per rank (decoding happens there; 0: in the main process)."""

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer: must be >= 0, got {self.shuffle_buffer}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")


def decode_sample(sample: dict, channels: int) -> tuple[torch.Tensor, int]:
    """WebDataset sample dict -> (uint8 image [C, H, W], class id or -1)."""
    data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if data is None:
        raise ValueError(
            f"sample {sample.get('__key__')} in {sample.get('__url__')} has no image "
            f"(looked for {', '.join(IMAGE_KEYS)})"
        )
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    label = int(sample["cls"]) if "cls" in sample else -1
    return torch.from_numpy(array.transpose(2, 0, 1).copy()), label


def _collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([im for im, _ in items])
    labels = torch.tensor([lb for _, lb in items], dtype=torch.int64)
    return images, labels


def stable_seed(*parts: object) -> int:
    """A seed from values, identical in every process (unlike ``hash`` of strings)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class ShardStream(IterableDataset):
    """An endless (``resampled``/``deterministic``) or one-pass (``epoch``) stream of batches."""

    def __init__(
        self,
        urls: list[str],
        *,
        mode: Literal["resampled", "deterministic", "epoch"],
        batch: int,
        channels: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 0,
        xflip: bool = False,
        micro_per_rank: int = 1,
        start_index: int = 0,
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("the manifest lists no shards for this split; re-run `ganforge prep`")
        self.urls = list(urls)
        self.mode = mode
        self.batch = batch
        self.channels = channels
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.xflip = xflip
        self.micro_per_rank = micro_per_rank
        # Mixed into the seeds so that a resumed run draws fresh shards instead of replaying
        # the stream from its beginning.
        self.start_index = start_index

    def _samples(self, rng: random.Random) -> Iterator[dict]:
        worker, num_workers = _worker()
        if self.mode == "epoch":
            # Exactly-once: shard i goes to the (rank, worker) pair i mod (world x workers).
            slot, slots = self.rank * num_workers + worker, self.world_size * num_workers
            urls = self.urls[slot::slots]
            yield from wds.tarfile_to_samples(handler=wds.warn_and_continue)(
                iter({"url": u} for u in urls)
            )
            return
        while True:  # endless: draw shards with replacement
            url = self.urls[rng.randrange(len(self.urls))]
            yield from wds.tarfile_to_samples(handler=wds.warn_and_continue)(iter([{"url": url}]))

    def _decoded(self, rng: random.Random, skip: int = 0) -> Iterator[tuple[torch.Tensor, int]]:
        """Shuffled, decoded samples; the first ``skip`` are drawn (same RNG use) but not decoded."""
        buffer: list[dict] = []
        for sample in self._samples(rng):
            if self.shuffle_buffer > 1 and self.mode != "epoch":
                buffer.append(sample)
                if len(buffer) < self.shuffle_buffer:
                    continue
                sample = buffer.pop(rng.randrange(len(buffer)))
            flip = self.xflip and rng.random() < 0.5
            if skip > 0:
                skip -= 1
                continue
            try:
                image, label = decode_sample(sample, self.channels)
            except Exception as exc:  # a corrupt sample is skipped, not fatal
                warnings.warn(
                    f"skipping undecodable sample {sample.get('__key__')} "
                    f"from {sample.get('__url__')}: {exc}",
                    stacklevel=2,
                )
                continue
            yield (image.flip(-1) if flip else image), label
        for sample in buffer:  # only reached by finite streams
            yield decode_sample(sample, self.channels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker, num_workers = _worker()
        if self.mode == "deterministic":
            if num_workers > 1:
                raise ValueError("data.loader=deterministic needs data.num_workers <= 1")
            # The same stream on every rank; a resumed run replays it up to where it stopped
            # (drawing without decoding), so resuming is exact.
            rng = random.Random(stable_seed(self.seed, "global"))
            global_batch = self.batch * self.micro_per_rank * self.world_size
            items: list = []
            for item in self._decoded(rng, skip=self.start_index):
                items.append(item)
                if len(items) == global_batch:
                    # keep this rank's micro-batches, in order
                    for m in range(self.micro_per_rank):
                        g = self.rank * self.micro_per_rank + m
                        yield _collate(items[g * self.batch : (g + 1) * self.batch])
                    items = []
            return
        rng = random.Random(stable_seed(self.seed, self.start_index, self.rank, worker))
        items = []
        for item in self._decoded(rng):
            items.append(item)
            if len(items) == self.batch:
                yield _collate(items)
                items = []
        if items and self.mode == "epoch":
            yield _collate(items)


def build_loader(
    manifest: Manifest,
    cfg: DataConfig,
    *,
    batch: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    micro_per_rank: int = 1,
    start_index: int = 0,
    split: str = "train",
    mode: Literal["resampled", "deterministic", "epoch"] | None = None,
) -> DataLoader:
    """A DataLoader yielding ``(uint8 images [B, C, H, W], int64 labels [B])`` micro-batches."""
    mode = mode or cfg.loader
    dataset = ShardStream(
        manifest.shard_urls(split),
        mode=mode,
        batch=batch,
        channels=manifest.channels,
        rank=rank,
        world_size=world_size,
        seed=seed,
        shuffle_buffer=cfg.shuffle_buffer,
        xflip=cfg.xflip and mode != "epoch",
        micro_per_rank=micro_per_rank,
        start_index=start_index,
    )
    workers = 0 if mode == "deterministic" else cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0 and mode != "epoch",
        prefetch_factor=4 if workers > 0 else None,
    )


def shard_warning(
    manifest: Manifest, world_size: int, num_workers: int, split: str = "train"
) -> str | None:
    """A warning when resampled readers would often read the same shards."""
    shards = len(manifest.split_shards(split))
    readers = world_size * max(num_workers, 1)
    if shards < 2 * readers:
        return (
            f"the dataset has {shards} {split} shards for {readers} readers (ranks x workers): "
            f"readers will often read the same shards; re-run `ganforge prep` with more, smaller "
            f"shards (--shard-samples) for this world size"
        )
    return None
