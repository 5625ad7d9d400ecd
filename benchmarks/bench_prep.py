"""Throughput and memory of ``ganforge prep`` on photo-like JPEGs -> 256x256 PNG shards.

Measures, on the same synthesized photos and in the same run:

- baseline: a plain single-process loop (PIL open -> center crop -> resize -> PNG encode ->
  write a file), the work NVlabs dataset_tool does per image;
- ``shard_dataset`` with 1 worker and with all cores (images/s, end to end: enumeration, plan,
  shards, manifest);
- peak RSS (the whole process tree: main process + workers, sampled with psutil) at two dataset
  sizes 10x apart, all cores.

Goals (docs/benchmarks.md): all cores >= 0.85 x cores x baseline; peak RSS grows < 50 MB
between the two sizes. Usage::

    python benchmarks/bench_prep.py [--images 2000] [--resolution 256] [--workers 0]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synth_photo(args: tuple[int, Path]) -> None:
    """A varied-size JPEG that compresses like a photo: smooth colour fields, gradients, grain."""
    seed, path = args
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(450, 1201, 2))
    # all heavy lifting in Pillow's C code: synthesis must not dominate the benchmark's runtime
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
        (width, height), Image.BICUBIC
    )
    gradient = Image.linear_gradient("L").rotate(float(rng.uniform(0, 360))).resize((width, height))
    grain = Image.effect_noise((width, height), float(rng.uniform(4, 12)))
    shade = ImageChops.add(gradient, grain, scale=2.0)
    photo = Image.blend(
        field, Image.merge("RGB", (shade, shade, shade)), float(rng.uniform(0.2, 0.4))
    )
    photo.save(path, "JPEG", quality=90)


def synthesize(folder: Path, count: int, workers: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(i, folder / f"photo_{i:06d}.jpg") for i in range(count)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(synth_photo, jobs, chunksize=16))


def baseline(folder: Path, out: Path, resolution: int) -> tuple[float, float]:
    """The plain single-process loop; returns (images/s, images per CPU-second)."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(folder.iterdir())
    start, cpu_start = time.perf_counter(), time.process_time()
    for path in files:
        with Image.open(path) as img:
            img = img.convert("RGB")
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize(
                (resolution, resolution), Image.LANCZOS
            )
            buf = io.BytesIO()
            img.save(buf, "PNG")
        (out / f"{path.stem}.png").write_bytes(buf.getvalue())
    return len(files) / (time.perf_counter() - start), len(files) / (
        time.process_time() - cpu_start
    )


PREP_CHILD = """
import json, resource, sys, time
from data_prep import PrepConfig, shard_dataset

def cpu(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime

if __name__ == "__main__":
    source, out, resolution, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    start, cpu_start = time.perf_counter(), cpu(resource.RUSAGE_SELF)
    m = shard_dataset(PrepConfig(source=source, resolution=resolution, workers=workers), out=out, progress=False)
    seconds = time.perf_counter() - start
    # workers are joined (reaped) by now, so RUSAGE_CHILDREN holds their CPU time
    cpu_seconds = cpu(resource.RUSAGE_SELF) - cpu_start + cpu(resource.RUSAGE_CHILDREN)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "samples": m.num_samples,
                      "shards": len(m.shards)}))
"""


def run_prep(source: Path, out: Path, resolution: int, workers: int) -> dict:
    """``shard_dataset`` in a fresh process; returns its timing and the tree's peak RSS (MB)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PREP_CHILD, str(source), str(out), str(resolution), str(workers)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    peak = {"tree": 0, "main": 0}
    parent = psutil.Process(proc.pid)

    def sample() -> None:
        while proc.poll() is None:
            try:
                procs = [parent] + parent.children(recursive=True)
                rss = [p.memory_info().rss for p in procs]
            except psutil.Error:
                continue
            peak["tree"] = max(peak["tree"], sum(rss))
            peak["main"] = max(peak["main"], rss[0])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"prep failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(
        rate=result["samples"] / result["seconds"],
        cpu_rate=result["samples"] / result["cpu_seconds"],
        peak_tree_mb=peak["tree"] / 2**20,
        peak_main_mb=peak["main"] / 2**20,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--images", type=int, default=2000, help="photos to synthesize (default 2000)"
    )
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="all-cores run (0: all cores)")
    args = parser.parse_args()
    cores = args.workers or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as tmp:
        tmp = Path(tmp)
        load0 = f"{os.getloadavg()[0]:.1f}"
        photos, small = tmp / "photos", tmp / "photos-small"
        t0 = time.perf_counter()
        synthesize(photos, args.images, cores)
        small.mkdir()
        n_small = max(1, args.images // 10)
        for path in sorted(photos.iterdir())[:n_small]:
            (small / path.name).symlink_to(path)
        print(
            f"synthesized {args.images} JPEGs in {time.perf_counter() - t0:.0f}s "
            f"({sum(p.stat().st_size for p in photos.iterdir()) / 2**20:.0f} MB)",
            file=sys.stderr,
        )
        base, base_cpu = baseline(photos, tmp / "baseline", args.resolution)
        one = run_prep(photos, tmp / "one", args.resolution, 1)
        full = run_prep(photos, tmp / "full", args.resolution, cores)
        tiny = run_prep(small, tmp / "small", args.resolution, cores)
    ratio = full["rate"] / (cores * base)
    efficiency = full["cpu_rate"] / base_cpu
    growth = full["peak_tree_mb"] - tiny["peak_tree_mb"]
    print(
        f"\n{args.images} JPEGs (450-1200 px) -> {args.resolution}x{args.resolution} PNG shards, "
        f"{cores} cores, load average before/after: {load0} / {os.getloadavg()[0]:.1f}\n"
    )
    print("| run | images/s | x baseline | images per CPU-second | peak RSS, process tree (main) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| baseline loop, 1 process | {base:.1f} | 1.00 | {base_cpu:.1f} | - |")
    for label, r in (
        (f"ganforge prep, 1 worker, {args.images} images", one),
        (f"ganforge prep, {cores} workers, {n_small} images", tiny),
        (f"ganforge prep, {cores} workers, {args.images} images", full),
    ):
        print(
            f"| {label} | {r['rate']:.1f} | {r['rate'] / base:.2f} | {r['cpu_rate']:.1f} | "
            f"{r['peak_tree_mb']:.0f} MB ({r['peak_main_mb']:.0f}) |"
        )
    print(
        f"\nall cores / (cores x baseline) = {ratio:.2f} wall clock (goal >= 0.85: "
        f"{'met' if ratio >= 0.85 else 'NOT met'})"
    )
    print(
        f"CPU efficiency of the all-cores run = {efficiency:.2f} x the baseline's images per CPU-second "
        f"(the wall-clock ratio it reaches when {cores} cores are free)"
    )
    print(
        f"peak RSS growth {n_small} -> {args.images} images = {growth:+.0f} MB "
        f"(goal < 50 MB: {'met' if growth < 50 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
