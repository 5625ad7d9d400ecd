"""``ganforge prep`` against an honest NVlabs dataset_tool baseline, in one run (issue #17).

On the same locally synthesized JPEG photos (450-1,200 px, no download) -> ``resolution``
squares, in the same run:

- **dataset_tool loop**: one process doing exactly the per-image work of NVlabs'
  ``dataset_tool.py --transform=center-crop`` (stylegan2-ada-pytorch, commit 0c2252a, read for
  this benchmark and re-implemented here, not copied): ``PIL.Image.open`` -> ``np.array`` ->
  numpy centre crop -> ``Image.fromarray(.., 'RGB')`` -> Lanczos resize -> ``np.array`` ->
  ``Image.fromarray`` -> PNG with ``compress_level=0, optimize=False`` -> written into an
  uncompressed (``ZIP_STORED``) zip, plus its ``dataset.json``;
- ``ganforge prep`` (``shard_dataset``) with 1 worker and with all cores, exact (default) and
  ``fast`` mode, each end to end in a fresh process (enumeration, plan, shards, manifest);
- images/s, x the dataset_tool loop, images per CPU-second, bytes per image, peak RSS of the
  whole process tree (sampled with psutil), and the RSS of an all-cores run on a tenth of the
  images (flat in the dataset size: memory must not grow with it);
- fast vs exact pixels over the whole dataset (mean |difference|, max, PSNR);
- a per-image CPU profile of the stages on the first ``--profile-images`` photos (decode,
  crop, resize, PNG at several levels with bytes, sha256, tar framing).

Goals (docs/benchmarks.md, 2 cores): default >= 1.7x the dataset_tool loop, fast >= 3x.
Usage (~3 minutes on 2 free cores, estimated from the CPU time of a 500-image run)::

    python benchmarks/bench_prep.py [--images 2000] [--resolution 256] [--workers 0]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# -- inputs ---------------------------------------------------------------------------------------
@functools.cache
def _sample_photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return load_sample_images().images


def synth_photo(args: tuple[int, Path]) -> None:
    """A varied-size JPEG (quality 90): even seeds a crop of scikit-learn's bundled photos
    (bicubic-resized, flipped, colour-shifted, light grain), odd seeds a synthetic photo
    (smooth colour fields, gradient, grain)."""
    seed, path = args
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(450, 1201, 2))
    if seed % 2 == 0:
        photos = _sample_photos()
        src = photos[(seed // 2) % len(photos)]
        h, w = src.shape[:2]
        ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = src[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        shifted = np.clip(crop * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
        photo = Image.fromarray(shifted).resize((width, height), Image.BICUBIC)
        grain = Image.effect_noise((width, height), float(rng.uniform(3, 8))).convert("RGB")
        photo = Image.blend(photo, grain, 0.08)
    else:
        field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
            (width, height), Image.BICUBIC
        )
        gradient = Image.linear_gradient("L").rotate(float(rng.uniform(0, 360)))
        gradient = gradient.resize((width, height))
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


# -- the dataset_tool-equivalent loop (runs in a child process) -----------------------------------
def dataset_tool_loop(source: Path, dest: Path, resolution: int) -> dict:
    """NVlabs dataset_tool's per-image work, one process (see the module docstring)."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    with zipfile.ZipFile(dest, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for idx, path in enumerate(files):
            pixels = np.array(Image.open(path))  # img_format 'keep': no convert
            side = int(np.min(pixels.shape[:2]))
            top, left = (pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2
            pixels = pixels[top : top + side, left : left + side]
            resized = Image.fromarray(pixels, "RGB").resize((resolution, resolution), Image.LANCZOS)
            pixels = np.array(resized)
            image = Image.fromarray(pixels, {1: "L", 3: "RGB"}[pixels.shape[2]])
            bits = io.BytesIO()
            image.save(bits, format="png", compress_level=0, optimize=False)
            name = f"{idx:08d}"
            archive.writestr(f"{name[:5]}/img{name}.png", bits.getbuffer())
        archive.writestr("dataset.json", json.dumps({"labels": None}))
    return {"samples": len(files), "bytes": dest.stat().st_size}


def prep_run(source: Path, out: Path, resolution: int, workers: int, fast: bool) -> dict:
    from data_prep import PrepConfig, shard_dataset

    cfg = PrepConfig(source=str(source), resolution=resolution, workers=workers, fast=fast)
    manifest = shard_dataset(cfg, out=str(out), progress=False)
    return {
        "samples": manifest.num_samples,
        "bytes": sum(s.bytes for s in manifest.shards),
        "shards": len(manifest.shards),
    }


def child(kind: str, source: str, out: str, resolution: int, workers: int) -> None:
    import resource

    def cpu(who: int) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    start, cpu_start = time.perf_counter(), cpu(resource.RUSAGE_SELF)
    if kind == "dataset_tool":
        result = dataset_tool_loop(Path(source), Path(out), resolution)
    else:
        result = prep_run(Path(source), Path(out), resolution, workers, fast=kind == "fast")
    result["seconds"] = time.perf_counter() - start
    # pool workers are joined (reaped) by now, so RUSAGE_CHILDREN holds their CPU time
    result["cpu_seconds"] = cpu(resource.RUSAGE_SELF) - cpu_start + cpu(resource.RUSAGE_CHILDREN)
    print(json.dumps(result))


def run_child(kind: str, source: Path, out: Path, resolution: int, workers: int = 1) -> dict:
    """One job in a fresh process; adds rates and the process tree's peak RSS (MB)."""
    cmd = [sys.executable, __file__, "--child", kind, str(source), str(out), str(resolution)]
    proc = subprocess.Popen(cmd + [str(workers)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
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
        raise SystemExit(f"{kind} run failed with exit code {proc.returncode}")
    r = json.loads(stdout.strip().splitlines()[-1])
    r.update(
        rate=r["samples"] / r["seconds"],
        cpu_rate=r["samples"] / r["cpu_seconds"],
        bytes_per_image=r["bytes"] / max(r["samples"], 1),
        peak_tree_mb=peak["tree"] / 2**20,
        peak_main_mb=peak["main"] / 2**20,
    )
    return r


# -- fast vs exact pixels -------------------------------------------------------------------------
def shard_pixels(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".png"):
                    data = tar.extractfile(member).read()
                    out[member.name[:-4]] = np.asarray(Image.open(io.BytesIO(data)), np.int16)
    return out


def pixel_difference(exact_dir: Path, fast_dir: Path) -> dict:
    exact, fast = shard_pixels(exact_dir), shard_pixels(fast_dir)
    keys = sorted(exact.keys() & fast.keys())
    diffs = [np.abs(exact[k] - fast[k]) for k in keys]
    mse = float(np.mean([(d.astype(np.float64) ** 2).mean() for d in diffs]))
    per_image = [float(d.mean()) for d in diffs]
    return {
        "images": len(keys),
        "mean": float(np.mean(per_image)),
        "worst_image_mean": max(per_image),
        "max": int(max(d.max() for d in diffs)),
        "psnr": 10 * np.log10(255**2 / mse) if mse else float("inf"),
    }


# -- per-image stage profile ----------------------------------------------------------------------
def profile(files: list[Path], resolution: int) -> list[tuple[str, float, float | None]]:
    """(stage, CPU ms per image, KB per image or None) on these files, in this process."""
    from data_prep.png import encode_png
    from data_prep.transform import crop_resize, decode
    from data_prep.writer import add_member

    rows: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}

    def timed(stage: str, fn, *args):
        start = time.process_time()
        result = fn(*args)
        rows.setdefault(stage, []).append(time.process_time() - start)
        return result

    def pillow_png(image, level):
        buf = io.BytesIO()
        image.save(buf, "PNG", compress_level=level)
        return buf.getvalue()

    def frame(encoded: bytes) -> None:
        with tarfile.open(fileobj=io.BytesIO(), mode="w", format=tarfile.USTAR_FORMAT) as tar:
            add_member(tar, "000000000.png", encoded)
            add_member(tar, "000000000.json", b'{"source": "x", "width": 1, "height": 1}')

    for path in files:
        raw = timed("read file", path.read_bytes)
        image = timed("decode (exact)", decode, raw, 10**9)
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        crop = timed("centre crop (copy)", image.crop, (left, top, left + side, top + side))
        out = timed("Lanczos resize", crop.resize, (resolution, resolution), Image.LANCZOS)

        def fast_decode_resize(raw=raw):
            img = Image.open(io.BytesIO(raw))
            full = img.size
            factor = resolution / min(full)
            result = img.draft(None, (int(full[0] * factor) + 1, int(full[1] * factor) + 1))
            scale = result[1][2] / full[0] if result else 1.0
            img.load()
            return crop_resize(
                img,
                resolution,
                "center-crop",
                "lanczos",
                full_size=full,
                scale=scale,
                reducing_gap=3.0,
            )

        timed("fast: draft decode + crop/resize", fast_decode_resize)
        pixels = np.asarray(out)
        for label, fn, arg, level in (
            ("PNG, Pillow level 0 (dataset_tool)", pillow_png, out, 0),
            ("PNG, ganforge level 0 (stored, no filter)", encode_png, pixels, 0),
            ("PNG, ganforge level 1 (default: Up filter + zlib RLE)", encode_png, pixels, 1),
            ("PNG, level 2 (Pillow, adaptive filters)", encode_png, pixels, 2),
            ("PNG, level 6 (Pillow; ganforge's old default)", encode_png, pixels, 6),
            ("PNG, level 9 (Pillow)", encode_png, pixels, 9),
        ):
            data = timed(label, fn, arg, level)
            sizes.setdefault(label, []).append(len(data))
        encoded = encode_png(pixels, 1)
        timed("sha256 of the sample", hashlib.sha256, encoded)
        timed("tar framing (2 members)", frame, encoded)
    return [
        (stage, 1000 * float(np.mean(t)), np.mean(sizes[stage]) / 1024 if stage in sizes else None)
        for stage, t in rows.items()
    ]


# -- main -----------------------------------------------------------------------------------------
def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, source, out, resolution, workers = sys.argv[2:7]
        child(kind, source, out, int(resolution), int(workers))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="photos (default 2000)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="all-cores runs (0: all cores)")
    parser.add_argument("--profile-images", type=int, default=100)
    args = parser.parse_args()
    cores = args.workers or len(os.sched_getaffinity(0))
    res = args.resolution
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as tmp:
        tmp = Path(tmp)
        photos, small = tmp / "photos", tmp / "photos-small"
        t0 = time.perf_counter()
        synthesize(photos, args.images, cores)
        files = sorted(photos.iterdir())
        small.mkdir()
        n_small = max(1, args.images // 10)
        for path in files[:n_small]:
            (small / path.name).symlink_to(path)
        mb = sum(p.stat().st_size for p in files) / 2**20
        print(
            f"synthesized {args.images} JPEGs ({mb:.0f} MB) in {time.perf_counter() - t0:.0f}s",
            file=sys.stderr,
        )
        stages = profile(files[: args.profile_images], res)
        runs = [
            ("dataset_tool loop, 1 process", run_child("dataset_tool", photos, tmp / "dt.zip", res))
        ]
        for label, kind, workers, out in (
            ("ganforge prep, 1 worker", "exact", 1, "exact1"),
            (f"ganforge prep, {cores} workers", "exact", cores, "exact"),
            ("ganforge prep --fast, 1 worker", "fast", 1, "fast1"),
            (f"ganforge prep --fast, {cores} workers", "fast", cores, "fast"),
        ):
            print(f"running {label} ...", file=sys.stderr)
            runs.append((label, run_child(kind, photos, tmp / out, res, workers)))
        tiny = run_child("exact", small, tmp / "small", res, cores)
        diff = pixel_difference(tmp / "exact", tmp / "fast")
    base = runs[0][1]
    print(
        f"\n{args.images} JPEG photos (450-1200 px) -> {res}x{res}, {cores} cores "
        f"({os.cpu_count()} CPUs), load average (1/5/15 min) before: {load_before}, "
        f"after: {load()}\n"
    )
    print(
        "| run | images/s | x dataset_tool | images per CPU-s | x dataset_tool (CPU) | "
        "bytes/image | peak RSS, process tree (main) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r in runs:
        print(
            f"| {label} | {r['rate']:.1f} | {r['rate'] / base['rate']:.2f} | {r['cpu_rate']:.1f} | "
            f"{r['cpu_rate'] / base['cpu_rate']:.2f} | {r['bytes_per_image'] / 1024:.0f} KB | "
            f"{r['peak_tree_mb']:.0f} MB ({r['peak_main_mb']:.0f}) |"
        )
    exact_all, fast_all = runs[2][1], runs[4][1]
    goals = (("default", exact_all, 1.7), ("fast", fast_all, 3.0))
    for name, r, goal in goals:
        ratio = r["rate"] / base["rate"]
        print(
            f"\n{name}, {cores} workers: {ratio:.2f}x the dataset_tool loop, wall clock (goal >= "
            f"{goal}: {'met' if ratio >= goal else 'NOT met'}); {r['cpu_rate'] / base['cpu_rate']:.2f}x "
            f"its images per CPU-second (x {cores} = the wall-clock ratio when {cores} cores are free)"
        )
    growth = exact_all["peak_tree_mb"] - tiny["peak_tree_mb"]
    print(
        f"\npeak RSS, {cores} workers: {tiny['peak_tree_mb']:.0f} MB at {n_small} images, "
        f"{exact_all['peak_tree_mb']:.0f} MB at {args.images} ({growth:+.0f} MB; goal: flat, < 50 MB)"
    )
    print(
        f"fast vs exact pixels over {diff['images']} images: mean |diff| {diff['mean']:.2f} "
        f"(worst image {diff['worst_image_mean']:.2f}), max {diff['max']}, PSNR {diff['psnr']:.1f} dB"
    )
    print(f"\nper-image CPU profile, first {min(args.profile_images, args.images)} photos:\n")
    print("| stage | CPU ms/image | KB/image |")
    print("|---|---:|---:|")
    for stage, ms, kb in stages:
        print(f"| {stage} | {ms:.2f} | {'' if kb is None else f'{kb:.0f}'} |")


if __name__ == "__main__":
    main()
