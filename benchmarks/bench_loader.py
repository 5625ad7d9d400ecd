"""Training reader throughput: WebDataset shards -> uint8 batches, per DataLoader worker (#17).

Writes photo-like PNG shards (ganforge's default PNG level) at 32x32 and 256x256, then times
``training.data`` reading them the way training does (``resampled``, shuffle buffer, xflip):

- one worker's rate: the stream iterated in this process (what each DataLoader worker does),
  as images/s of wall clock and images per CPU-second (the rate a worker reaches when it has a
  core to itself - the number that matters on a loaded machine);
- ``build_loader`` with all cores as workers (the whole pipeline, worker processes and
  batch transfer included).

Then the workers per GPU that the trainer's goals need (StyleGAN2 at 1.0 s/kimg at 32x32 and
5.0 s/kimg at 256x256 per GPU: 1,000 and 200 images/s), with a 2x margin (a worker shares its
core with the training process, augmentation and other ranks). Usage::

    python benchmarks/bench_loader.py [--seconds 8] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOALS = {32: 1000.0, 256: 200.0}
"""Images/s per GPU that the trainer's s/kimg goals consume (1000 / (s/kimg))."""
MARGIN = 2.0


def photo(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour fields + grain: compresses and decodes like a photo crop."""
    field = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    smooth = np.asarray(field.resize((size, size), Image.BICUBIC), np.int16)
    grain = rng.normal(0, 6, (size, size, 3))
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def write_shards(folder: Path, size: int, count: int, per_shard: int) -> str:
    import webdataset as wds

    from data_prep.manifest import Manifest, ShardInfo, save_manifest
    from data_prep.png import encode_png

    rng = np.random.default_rng(size)
    base = [photo(rng, size) for _ in range(64)]  # reused: writing is not what we measure
    shards = []
    for s in range(math.ceil(count / per_shard)):
        name = f"train-{s:06d}.tar"
        n = min(per_shard, count - s * per_shard)
        with wds.TarWriter(str(folder / name)) as sink:
            for i in range(n):
                idx = s * per_shard + i
                pixels = np.roll(base[idx % 64], idx // 64, axis=1)  # distinct images
                sink.write(
                    {
                        "__key__": f"{idx:09d}",
                        "png": encode_png(pixels, 1),
                        "cls": str(idx % 10).encode(),
                        "json": json.dumps({"source": f"synthetic[{idx}]"}).encode(),
                    }
                )
        info = ShardInfo(
            name=name, split="train", num_samples=n, bytes=(folder / name).stat().st_size, sha256=""
        )
        shards.append(info)
    manifest = Manifest(
        name=f"bench{size}",
        resolution=size,
        channels=3,
        image_format="png",
        num_samples=count,
        classes={str(i): i for i in range(10)},
        shards=shards,
    )
    return save_manifest(manifest, str(folder))


def one_worker(manifest_url: str, batch: int, seconds: float) -> dict:
    """The stream in this process: one worker's wall and CPU rates (after the buffer fills)."""
    from data_prep.manifest import load_manifest
    from training.data import DataConfig, build_loader

    torch.set_num_threads(1)  # as in a DataLoader worker
    manifest = load_manifest(manifest_url)
    cfg = DataConfig(num_workers=0, shuffle_buffer=1000, xflip=True)
    it = iter(build_loader(manifest, cfg, batch=batch, seed=1))
    for _ in range(max(1, 1200 // batch)):  # fill the shuffle buffer
        next(it)
    images, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        images += next(it)[0].shape[0]
    return {
        "rate": images / (time.perf_counter() - start),
        "cpu_rate": images / (time.process_time() - cpu),
    }


def all_workers(manifest_url: str, batch: int, workers: int, seconds: float) -> float:
    from data_prep.manifest import load_manifest
    from training.data import DataConfig, build_loader

    manifest = load_manifest(manifest_url)
    cfg = DataConfig(num_workers=workers, shuffle_buffer=1000, xflip=True)
    it = iter(build_loader(manifest, cfg, batch=batch, seed=1))
    for _ in range(max(1, 2400 // batch)):
        next(it)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        images += next(it)[0].shape[0]
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per run")
    parser.add_argument("--workers", type=int, default=0, help="all-workers run (0: all cores)")
    args = parser.parse_args()
    cores = args.workers or len(os.sched_getaffinity(0))
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        for size, count, per_shard, batch in ((32, 20000, 1000, 64), (256, 3000, 150, 32)):
            folder = Path(tmp) / str(size)
            folder.mkdir()
            url = write_shards(folder, size, count, per_shard)
            print(f"wrote {count} {size}x{size} samples; timing ...", file=sys.stderr)
            one = one_worker(url, batch, args.seconds)
            many = all_workers(url, batch, cores, args.seconds)
            rows.append((size, batch, one, many))
    load_after = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\nWebDataset reader (resampled, shuffle buffer 1000, xflip), PNG level 1, {cores} cores "
        f"({os.cpu_count()} CPUs); load average (1/5/15 min) before: {load_before}, after: "
        f"{load_after}\n"
    )
    print(
        "| resolution | batch | 1 worker: images/s | 1 worker: images per CPU-s | "
        f"{cores} workers: images/s | goal per GPU | workers per GPU (x{MARGIN:g} margin) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size, batch, one, many in rows:
        need = math.ceil(GOALS[size] * MARGIN / one["cpu_rate"])
        print(
            f"| {size}x{size} | {batch} | {one['rate']:.0f} | {one['cpu_rate']:.0f} | {many:.0f} | "
            f"{GOALS[size]:.0f} images/s | {need} |"
        )
    print(
        "\nworkers per GPU = ceil(goal x margin / one worker's images per CPU-second): each "
        "worker needs a core of its own; set data.num_workers to at least this."
    )


if __name__ == "__main__":
    main()
