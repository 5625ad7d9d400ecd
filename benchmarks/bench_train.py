"""Training speed, eager vs compiled: s/kimg of the real training loop (``ganforge train``).

Each (config, mode) runs ``python -m pipeline.cli train`` in a fresh process (so compile caches
and allocator state never carry over) on a synthetic dataset of random images, for ``--ticks``
ticks, and reads the per-tick ``timing/sec_per_kimg`` from the run's ``metrics.jsonl``. The first
``--skip`` ticks (start-up, torch.compile, cudnn autotuning) are dropped and the median of the rest
is reported: whole ticks with data loading included, which is what NVlabs' s/kimg measures. ADA is
on at p = 0.2 (as in a running ADA training), evaluation, snapshots and tracking are off.

Configs (StyleGAN2-ADA's, see ../shared/ANCHORS.md for NVlabs' H100 figures):
  cpu16     16x16, batch 16, channel_base 1024 / max 64, map 2 (a CPU-sized StyleGAN2)
  cpu32     32x32, batch 16, channel_base 2048 / max 64, map 2
  cifar32   --cfg=cifar: 32x32, batch 64, gamma 0.01, map 2, mbstd 32, 512 maps (GPU)
  auto256   --cfg=auto at 256x256: batch 16, gamma 0.8192, map 2, mbstd 4, channel_base 16384 (GPU)

  python benchmarks/bench_train.py --configs cpu16 --threads 1      # CPU: eager and compiled
  python benchmarks/bench_train.py --configs cifar32,auto256 --precision bf16      # one GPU
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (preset, resolution, number of images, overrides, tick_kimg)
CONFIGS: dict[str, tuple[str, int, int, list[str], float]] = {
    "cpu16": (
        "cifar",
        16,
        256,
        [
            "train.batch=16",
            "model.channel_base=1024",
            "model.channel_max=64",
            "model.mbstd_group=4",
        ],
        0.064,
    ),
    "cpu32": (
        "cifar",
        32,
        256,
        [
            "train.batch=16",
            "model.channel_base=2048",
            "model.channel_max=64",
            "model.mbstd_group=4",
        ],
        0.128,
    ),
    "cifar32": ("cifar", 32, 1024, ["train.batch=64"], 1.28),
    "auto256": ("auto256", 256, 128, ["train.batch=16"], 0.32),
}
# NVlabs StyleGAN3 repo, --cfg=stylegan2, 1x H100, custom CUDA ops (shared/ANCHORS.md)
NVLABS_H100 = {"cifar32": 2.16, "auto256": 12.3}
GOAL_H100 = {"cifar32": 1.0, "auto256": 5.0}  # issue #11


def synthetic_dataset(folder: Path, resolution: int, count: int) -> str:
    """One WebDataset shard of random RGB PNGs + a manifest (real checksums)."""
    from data_prep.manifest import Manifest, ShardInfo, save_manifest

    folder.mkdir(parents=True, exist_ok=True)
    name = "train-000000.tar"
    import webdataset as wds

    rng = np.random.default_rng(0)
    with wds.TarWriter(str(folder / name)) as sink:
        for i in range(count):
            buf = io.BytesIO()
            pixels = rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buf, "PNG")
            sink.write({"__key__": f"{i:06d}", "png": buf.getvalue()})
    data = (folder / name).read_bytes()
    manifest = Manifest(
        name=f"random{resolution}",
        resolution=resolution,
        channels=3,
        image_format="png",
        num_samples=count,
        classes={},
        shards=[ShardInfo(name, "train", count, len(data), hashlib.sha256(data).hexdigest())],
    )
    save_manifest(manifest, str(folder))
    return str(folder)


def run_one(name: str, mode: str, args: argparse.Namespace, work: Path) -> dict:
    preset, resolution, count, overrides, tick_kimg = CONFIGS[name]
    tick_kimg = tick_kimg * args.tick_scale
    data = work / f"data-{name}"
    if not data.exists():
        synthetic_dataset(data, resolution, count)
    run_name = f"bench-{name}-{mode}"
    sets = [
        *overrides,
        f"work_dir={work}",
        f"name={run_name}",
        f"data.manifest={data}",
        "model.conditional=false",
        "tracking.enabled=false",
        "augment.mode=ada",
        "augment.p=0.2",
        f"train.mixed_precision={args.precision}",
        f"train.compile={'true' if mode == 'compiled' else 'false'}",
        f"train.tick_kimg={tick_kimg}",
        f"train.total_kimg={tick_kimg * (args.ticks + args.skip)}",
        "train.snapshot_ticks=0",
        "train.checkpoint_ticks=0",
        "train.resume=null",
        "eval.at_end=false",
        "eval.every_kimg=0",
        *args.set,
    ]
    command = [sys.executable, "-m", "pipeline.cli", "train", "--preset", preset]
    for s in sets:
        command += ["--set", s]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    start = time.time()
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout
        )
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        log = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        status = f"timeout {args.timeout}s"
        log = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    wall = time.time() - start
    (work / f"{run_name}.log").write_text(log)
    ticks = []
    metrics = work / "runs" / run_name / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "timing/sec_per_kimg" in row:
                ticks.append(float(row["timing/sec_per_kimg"]))
    timed = ticks[args.skip :]
    if status == "ok" and not timed:
        status = "no timed ticks"
    if status != "ok":
        print(f"# {name} {mode}: {status}; last log lines:\n" + "\n".join(log.splitlines()[-8:]))
    return {
        "config": name,
        "mode": mode,
        "status": status,
        "batch": next(o for o in overrides if o.startswith("train.batch=")).split("=")[1],
        "ticks": len(timed),
        "first": ticks[0] if ticks else float("nan"),
        "median": statistics.median(timed) if timed else float("nan"),
        "low": min(timed) if timed else float("nan"),
        "high": max(timed) if timed else float("nan"),
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="cpu16", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--modes", default="eager,compiled", help="eager and/or compiled")
    parser.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--ticks", type=int, default=3, help="timed ticks per run")
    parser.add_argument("--skip", type=int, default=1, help="untimed first ticks (compile)")
    parser.add_argument("--tick-scale", type=float, default=1.0, help="scale the tick length")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads per run (0: torch's default)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for every run, e.g. loss.r1_gamma=0 (repeatable)",
    )
    parser.add_argument("--work", default=None, help="keep runs and logs here (default: temp)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in ("eager", "compiled")]:
        parser.error(f"--modes: unknown {bad}; valid: eager, compiled")
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    if bad := [c for c in names if c not in CONFIGS]:
        parser.error(f"--configs: unknown {bad}; valid: {', '.join(CONFIGS)}")

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    threads = args.threads or torch.get_num_threads()
    print(f"# torch {torch.__version__}, device {device}, threads per run {threads}")
    if args.set:
        print(f"# extra overrides: {' '.join(args.set)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            for mode in modes:
                rows.append(run_one(name, mode, args, work))
                r = rows[-1]
                print(f"# {name} {mode}: {r['median']:.2f} s/kimg ({r['status']})", flush=True)
    print()
    print(
        "| config | mode | precision | batch | s/kimg (median) | min-max | timed ticks "
        "| first tick | wall s | NVlabs H100 (CUDA ops) | goal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ok = r["status"] == "ok"
        median = f"{r['median']:.2f}" if ok else r["status"]
        spread = f"{r['low']:.2f}-{r['high']:.2f}" if ok else "-"
        anchor = NVLABS_H100.get(r["config"], "-")
        goal = GOAL_H100.get(r["config"], "-")
        print(
            f"| {r['config']} | {r['mode']} | {args.precision} | {r['batch']} | {median} | {spread} "
            f"| {r['ticks']} | {r['first']:.2f} | {r['wall']:.0f} | {anchor} | {goal} |"
        )
    by_key = {(r["config"], r["mode"]): r for r in rows if r["status"] == "ok"}
    for name in names:
        eager, compiled = by_key.get((name, "eager")), by_key.get((name, "compiled"))
        if eager and compiled:
            print(f"# {name}: compiled / eager = {compiled['median'] / eager['median']:.2f}")


if __name__ == "__main__":
    main()
