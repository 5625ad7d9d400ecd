"""Reading data_prep shards for training and evaluation (WebDataset).

Three ways to read the shards listed in a manifest:

- ``resampled`` (training default): every rank and DataLoader worker draws shards *with
  replacement* from its own seeded stream, so there are no epochs, no uneven-split stalls and no
  coordination between ranks. Shards are globally shuffled by data_prep, so each one is a random
  sample of the dataset; a shuffle buffer mixes samples further.
- ``deterministic``: every rank and worker reads the *same* seeded stream of raw samples, cut
  into global batches; each decodes only its own micro-batches (workers take turns, micro-batch
  by micro-batch, which is the order the DataLoader returns them in). Costs world-size x
  reading, not decoding, and a run gives the same result on any number of processes and
  workers (used to verify distributed training; see docs/distributed.md).
- ``epoch`` (evaluation): one pass, each shard read by exactly one (rank, worker); partial last
  batches are kept, so uneven shard counts never deadlock - callers gather with padding.

Samples decode in DataLoader workers to ``uint8 [C, H, W]`` tensors plus an ``int64`` label (-1
when unlabelled); the trainer moves batches to the device and scales them to [-1, 1].

Faults: ``check_shards`` stops a run at start when shards are missing or short. While reading,
a shard that cannot be opened or is cut short is warned about once (samples read vs the
manifest's count), a sample without its label in a labelled dataset is skipped (never class 0),
an undecodable sample is skipped with a warning, and ``max_read_errors`` consecutive failures
stop the reader with a ``DataReadError`` instead of redrawing forever. Nothing sleeps, so a
SIGTERM is seen by the trainer at its next step.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import posixpath
import random
import signal
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import fsspec
import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from data_prep.manifest import MANIFEST_NAME, Manifest

IMAGE_KEYS = ("png", "webp", "jpg", "jpeg")


class DataReadError(ValueError):
    """Shards are missing or keep failing to read; the message names them and what to do."""


@dataclass(kw_only=True)
class DataConfig:
    manifest: str | None = None
    """Manifest file or folder/URL from ``ganforge prep`` (None: the ``prep.out`` of this config)."""
    loader: Literal["resampled", "deterministic"] = "resampled"
    """resampled: independent shard streams per rank/worker (scales to any cluster);
    deterministic: identical results on any world size, at world-size x reading cost."""
    shuffle_buffer: int = 2000
    """Samples in the shuffle buffer per worker (0: no shuffle)."""
    xflip: bool = False
    """Mirror real images at random (doubles the effective dataset)."""
    num_workers: int = 2
    """DataLoader worker processes per rank (decoding happens there; 0: in the main process)."""
    max_read_errors: int = 100
    """Consecutive unreadable shards/samples after which the reader stops with an error."""

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer: must be >= 0, got {self.shuffle_buffer}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")
        if self.max_read_errors < 1:
            raise ValueError(f"max_read_errors: must be >= 1, got {self.max_read_errors}")


# -- checks at start ------------------------------------------------------------------------------
def check_shards(manifest: Manifest, split: str | None = None, *, show: int = 3) -> None:
    """Raise ``DataReadError`` (one line naming the first ``show``) unless every shard of the
    manifest (or of one split) exists with the manifest's size. Local paths and fsspec URLs;
    one directory listing per folder, so it stays cheap for thousands of remote shards."""
    shards = manifest.shards if split is None else manifest.split_shards(split)
    urls = [_shard_url(manifest, s.name) for s in shards]
    sizes: dict[str, dict[str, int] | None] = {}
    problems: list[str] = []
    for shard, url in zip(shards, urls):
        folder, base = posixpath.split(url)
        if folder not in sizes:
            sizes[folder] = _listing(folder)
        size = (sizes[folder] or {}).get(base)
        if size is None and sizes[folder] is not None:
            size = _size(url)  # confirm: some listings are partial (HTTP index pages)
        if size is None:
            problems.append(f"{shard.name} (missing)")
        elif shard.bytes and size != shard.bytes:
            problems.append(f"{shard.name} ({size} bytes, manifest says {shard.bytes})")
    if problems:
        where = f"{manifest.location}/{MANIFEST_NAME}" if manifest.location else "the manifest"
        more = f" and {len(problems) - show} more" if len(problems) > show else ""
        raise DataReadError(
            f"{len(problems)} of {len(shards)} shards listed in {where} are missing or have the "
            f"wrong size: {', '.join(problems[:show])}{more}; restore them or re-run `ganforge prep` "
            f"(`ganforge prep verify` checks a dataset in full)"
        )


def _shard_url(manifest: Manifest, name: str) -> str:
    base = manifest.location.rstrip("/")
    return f"{base}/{name}" if base else name


def _size(url: str) -> int | None:
    try:
        fs, path = fsspec.core.url_to_fs(url)
        return int(fs.info(path).get("size") or 0)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _listing(folder: str) -> dict[str, int] | None:
    """name -> size of the files in a local or fsspec folder (None: the folder is missing)."""
    try:
        fs, path = fsspec.core.url_to_fs(folder or ".")
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except Exception:  # noqa: BLE001 - no listing on this filesystem: check each shard
        return {}
    return {
        posixpath.basename(e["name"].rstrip("/")): int(e.get("size") or 0)
        for e in entries
        if e.get("type") != "directory"
    }


# -- reading --------------------------------------------------------------------------------------
def decode_sample(sample: dict, channels: int, flip: bool = False) -> tuple[torch.Tensor, int]:
    """WebDataset sample dict -> (uint8 image [C, H, W], mirrored when ``flip``; class id or -1)."""
    data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if data is None:
        raise ValueError(
            f"sample {sample.get('__key__')} in {sample.get('__url__')} has no image "
            f"(looked for {', '.join(IMAGE_KEYS)})"
        )
    mode = "L" if channels == 1 else "RGB"
    with Image.open(io.BytesIO(data)) as img:
        array = np.asarray(img if img.mode == mode else img.convert(mode), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if flip:  # a view: the mirror costs nothing before the one copy below
        array = array[:, ::-1]
    label = int(sample["cls"]) if "cls" in sample else -1
    # always one copy: PIL's buffer is read-only, and a grayscale [H, W, 1] -> [1, H, W] transpose
    # is already contiguous, so ascontiguousarray would hand torch the read-only buffer itself
    return torch.from_numpy(np.array(array.transpose(2, 0, 1), order="C")), label


def _open_shard(url: str):
    if url.startswith("pipe:"):
        return wds.gopen(url)
    return fsspec.open(url, "rb").open()


def shard_samples(url: str) -> Iterator[dict]:
    """The samples of one tar shard, grouped by key; read errors propagate (no handler)."""
    with _open_shard(url) as stream:
        sample: dict | None = None
        for file in wds.tariterators.tar_file_iterator(stream):
            prefix, suffix = wds.tariterators.base_plus_ext(file["fname"])
            if prefix is None:
                continue
            if sample is None or prefix != sample["__key__"]:
                if sample is not None:
                    yield sample
                sample = {"__key__": prefix, "__url__": url}
            sample[suffix.lower()] = file["data"]
        if sample is not None:
            yield sample


class _ErrorCount:
    """Consecutive read failures; raises after ``limit`` in a row (a success resets it)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0

    def ok(self) -> None:
        self.count = 0

    def bad(self, what: str) -> None:
        self.count += 1
        if self.count >= self.limit:
            raise DataReadError(
                f"{self.count} consecutive shards/samples could not be read (last: {what}); "
                f"check the dataset with `ganforge prep verify` and restore or re-create it "
                f"(data.max_read_errors={self.limit})"
            )


def pop_random(buffer: list, rng: random.Random):
    """Remove and return a uniformly drawn element in O(1): the last one takes its place
    (``list.pop(i)`` shifts the tail, O(buffer) per sample)."""
    i = rng.randrange(len(buffer))
    buffer[i], buffer[-1] = buffer[-1], buffer[i]
    return buffer.pop()


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
        num_classes: int = 0,
        shard_counts: list[int] | None = None,
        max_read_errors: int = 100,
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
        # > 0: labelled; a sample must carry a class id in [0, num_classes) to be used.
        self.num_classes = num_classes
        self.expected = dict(zip(self.urls, shard_counts)) if shard_counts else {}
        self.max_read_errors = max_read_errors
        self._warned: set[str] = set()

    # -- raw samples --------------------------------------------------------------------------
    def _incomplete(self, sample: dict) -> str | None:
        """Why a raw sample cannot be used (decided on raw bytes, identical in every process)."""
        if not any(k in sample for k in IMAGE_KEYS):
            return "no image"
        if self.num_classes:
            if "cls" not in sample:
                return "no label in a labelled dataset"
            try:
                label = int(sample["cls"])
            except ValueError:
                return f"label {sample['cls'][:20]!r} is not an integer"
            if not 0 <= label < self.num_classes:
                return f"label {label} outside 0..{self.num_classes - 1}"
        return None

    def _read_shard(self, url: str, errors: _ErrorCount) -> Iterator[dict]:
        """Usable samples of one shard; a shard cut short or unreadable is warned about once."""
        read, skipped, problem = 0, 0, ""
        try:
            for sample in shard_samples(url):
                why = self._incomplete(sample)
                if why is not None:
                    skipped += 1
                    errors.bad(f"sample {sample['__key__']} in {url}: {why}")
                    continue
                read += 1
                yield sample
        except DataReadError:
            raise
        except FileNotFoundError:
            problem = "missing"
            errors.bad(f"{url}: missing")
        except Exception as exc:  # truncated/corrupt tar, I/O error: warn, go on
            problem = f"{type(exc).__name__}: {exc}"
            errors.bad(f"{url}: {problem}")
        expected = self.expected.get(url)
        if (problem or skipped or (expected is not None and read != expected)) and (
            url not in self._warned
        ):
            self._warned.add(url)
            details = [
                d for d in (problem, f"{skipped} incomplete samples skipped" * bool(skipped)) if d
            ]
            warnings.warn(
                f"shard {url}: read {read} of {expected if expected is not None else '?'} samples"
                f"{' (' + '; '.join(details) + ')' if details else ''}; "
                f"`ganforge prep verify` checks the dataset",
                stacklevel=2,
            )

    def _samples(self, rng: random.Random, errors: _ErrorCount) -> Iterator[dict]:
        worker, num_workers = _worker()
        if self.mode == "epoch":
            # Exactly-once: shard i goes to the (rank, worker) pair i mod (world x workers).
            slot, slots = self.rank * num_workers + worker, self.world_size * num_workers
            for url in self.urls[slot::slots]:
                yield from self._read_shard(url, errors)
            return
        while True:  # endless: draw shards with replacement
            yield from self._read_shard(self.urls[rng.randrange(len(self.urls))], errors)

    def _raw(self, rng: random.Random, errors: _ErrorCount) -> Iterator[tuple[dict, bool]]:
        """Shuffled raw samples, each with its mirror flag (one RNG draw per sample)."""
        buffer: list[dict] = []
        for sample in self._samples(rng, errors):
            if self.shuffle_buffer > 1 and self.mode != "epoch":
                buffer.append(sample)
                if len(buffer) < self.shuffle_buffer:
                    continue
                sample = pop_random(buffer, rng)
            yield sample, self.xflip and rng.random() < 0.5

    # -- decoding -----------------------------------------------------------------------------
    def _decode(self, sample: dict, flip: bool, errors: _ErrorCount):
        """(image, label), or None for an undecodable sample (warned, counted)."""
        try:
            image, label = decode_sample(sample, self.channels, flip)
        except Exception as exc:  # a corrupt sample is skipped, not fatal
            warnings.warn(
                f"skipping undecodable sample {sample.get('__key__')} "
                f"from {sample.get('__url__')}: {exc}",
                stacklevel=2,
            )
            errors.bad(f"undecodable sample {sample.get('__key__')} in {sample.get('__url__')}")
            return None
        errors.ok()
        return image, label

    def _deterministic(self, errors: _ErrorCount) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of the one global stream; this worker decodes every
        ``num_workers``-th of them. The stream is cut on raw samples, so it is the same in every
        process; an undecodable sample is replaced by a decodable one of the same micro-batch (or
        this worker's previous one) instead of shifting the stream."""
        worker, num_workers = _worker()
        rng = random.Random(stable_seed(self.seed, "global"))
        size, micro = self.batch, self.micro_per_rank
        global_batch = size * micro * self.world_size
        first = self.rank * micro * size  # this rank's offset inside a global batch
        pending: list[tuple[dict, bool]] = []
        fallback = None
        for n, (sample, flip) in enumerate(self._raw(rng, errors)):
            if n < self.start_index:  # a resumed run replays the stream up to where it stopped
                continue
            step, within = divmod(n - self.start_index, global_batch)
            if not first <= within < first + micro * size:
                continue
            if (step * micro + (within - first) // size) % num_workers != worker:
                continue
            pending.append((sample, flip))
            if len(pending) < size:
                continue
            items = [self._decode(s, f, errors) for s, f in pending]
            good = next((it for it in items if it is not None), fallback)
            if good is None:
                raise DataReadError(
                    f"no decodable sample in a whole batch (first: {pending[0][0]['__key__']} in "
                    f"{pending[0][0]['__url__']}); check the dataset with `ganforge prep verify`"
                )
            fallback = good
            yield _collate([it if it is not None else good for it in items])
            pending = []

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        errors = _ErrorCount(self.max_read_errors)
        if self.mode == "deterministic":
            yield from self._deterministic(errors)
            return
        worker, _ = _worker()
        rng = random.Random(stable_seed(self.seed, self.start_index, self.rank, worker))
        items = []
        for sample, flip in self._raw(rng, errors):
            item = self._decode(sample, flip, errors)
            if item is None:
                continue
            items.append(item)
            if len(items) == self.batch:
                yield _collate(items)
                items = []
        if items and self.mode == "epoch":
            yield _collate(items)


_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _shut_down_workers() -> None:
    """Stop loader workers before multiprocessing's own exit handler joins them.

    The workers ignore SIGTERM (see ``_ignore_stop_signals``), and at interpreter exit
    multiprocessing terminates (SIGTERM) and then joins every live child: a loader still open
    then (an interrupted run, persistent workers) would make the process wait forever. This
    handler is registered after multiprocessing's (torch imports it first), so it runs before
    it, and ends the workers the way the DataLoader does when it is closed."""
    for iterator in list(_LIVE_ITERATORS):
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class _WorkerIterator(_MultiProcessingDataLoaderIter):
    """torch's worker iterator, whose shutdown also ends a worker that did not stop in time.

    torch asks the workers to stop, waits a few seconds and then ``terminate()``s (SIGTERM) the
    ones still alive; ours ignore SIGTERM (``_ignore_stop_signals``), so a worker busy past that
    wait (a loaded machine, a slow read) would stay alive, and the interpreter's exit, which
    joins every child process, would wait for it forever. SIGKILL it instead."""

    def _shutdown_workers(self) -> None:
        super()._shutdown_workers()
        for worker in getattr(self, "_workers", []):
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)


class ShardLoader(DataLoader):
    """A DataLoader whose read errors from worker processes stay one line (not a traceback)."""

    def _get_iterator(self):
        if self.num_workers == 0:
            return super()._get_iterator()
        self.check_worker_number_rationality()
        # The workers are forked in there and ignore SIGTERM/SIGINT only once their init has run:
        # block both meanwhile (the mask is inherited), so that a signal sent to the whole job
        # while they start stays pending and is then ignored instead of killing one of them.
        stop = {signal.SIGTERM, signal.SIGINT}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        try:
            return _WorkerIterator(self)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def __iter__(self):
        iterator = super().__iter__()
        if self.num_workers > 0:
            _LIVE_ITERATORS.add(iterator)
        try:
            yield from iterator
        except Exception as exc:  # not GeneratorExit: a consumer that stops early keeps them
            if self.num_workers > 0:
                # End the workers now: the exception's traceback keeps this frame, and so the
                # iterator, in a reference cycle; the shutdown that the cyclic GC ran later
                # waited ~20 s (measured) for workers that never received their stop signal.
                iterator._shutdown_workers()
                self._iterator = None  # a persistent loader starts afresh if iterated again
            if not isinstance(exc, DataReadError):
                raise
            message = str(exc)
            if "Original Traceback" in message:  # re-raised from a worker: keep its message
                last = message.strip().splitlines()[-1]
                message = last.split("DataReadError: ", 1)[-1]
            raise DataReadError(message) from None


def _ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave SIGTERM/SIGINT to the main process. SLURM (and a terminal's
    Ctrl-C) signal every process of the job; a worker that died of it would make the main
    process raise "DataLoader worker killed" instead of writing its checkpoint. The workers end
    when the main process closes the loader (or exits: they watch their parent)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})  # see ShardLoader


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
        num_classes=manifest.num_classes,
        shard_counts=[s.num_samples for s in manifest.split_shards(split)],
        max_read_errors=cfg.max_read_errors,
    )
    workers = cfg.num_workers
    return ShardLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0 and mode != "epoch",
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_ignore_stop_signals if workers > 0 else None,
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
