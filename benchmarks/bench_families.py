"""Every GAN family on the built-in digits for the same CPU time: does each step of history help?

For each family's digits preset (``seed-mlp``, ``dcgan-digits``, ``wgan-digits``,
``wgan-gp-digits``, ``progan-digits``, ``digits`` = StyleGAN2), one after another on the same
machine and the same data (the digits at 32x32 grayscale, one manifest, so one coverage
classifier and comparable Frechet distances):

1. ``ganforge train --preset P`` runs as a child process with an unbounded length; when its CPU
   time (user + system, all threads) reaches the budget it gets SIGTERM, which saves a checkpoint.
2. The same command with ``train.total_kimg`` = the kimg reached resumes, finds nothing left to
   train and writes the final export, grid and evaluation of the final G (G_ema where used).
3. The table: kimg reached, class coverage, class entropy, ``confident`` (share read with
   >= 0.9 probability; the real images' figure beside it) and the classifier Frechet distance;
   one grid per family and a side-by-side picture.

CPU time rather than wall time, so that other load on a shared machine changes how long the
benchmark takes, not its result (up to cache effects). The data loader runs in the training
process (``data.num_workers=0``) so that its work is counted.

  python benchmarks/bench_families.py                          # 300 CPU-s per family (~35 min)
  python benchmarks/bench_families.py --cpu-seconds 60 --families mlp dcgan   # a quick look
  python benchmarks/bench_families.py --cpu-seconds 120 --parallel 3          # a busy machine

One torch thread per run by default: on a shared 2-core machine two threads spin-wait for each
other and burn several times the CPU per kimg (measured: 1.5 vs 14 CPU-s/kimg for DCGAN).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# family -> preset
PRESETS = {
    "mlp": "seed-mlp",
    "dcgan": "dcgan-digits",
    "wgan": "wgan-digits",
    "wgan-gp": "wgan-gp-digits",
    "progan": "progan-digits",
    "stylegan2": "digits",
}
METRICS = ("coverage", "class_entropy", "confident", "confident_real", "classifier_fd")


def prep(work: Path) -> Path:
    """The digits at 32x32 grayscale as shards (once); -> manifest folder."""
    from data_prep import shard_dataset
    from data_prep.config import PrepConfig

    out = work / "data" / "digits-32-gray"
    if not (out / "manifest.json").is_file():
        shard_dataset(PrepConfig(source="digits", resolution=32, channels=1), out=str(out))
    # the coverage classifier and the real features, once, before runs evaluate in parallel
    from data_prep.manifest import load_manifest
    from training.metrics import EvalConfig
    from training.metrics.evaluation import precompute_reference

    precompute_reference(load_manifest(str(out)), EvalConfig(metrics=["coverage"], num_workers=0))
    return out


def _cpu_seconds(proc) -> float:
    import psutil

    try:
        p = psutil.Process(proc.pid)
        total = sum(p.cpu_times()[:2])
        for child in p.children(recursive=True):
            total += sum(child.cpu_times()[:2])
        return total
    except psutil.NoSuchProcess:
        return 0.0


def train_for(family: str, manifest: Path, work: Path, cpu_seconds: float, threads: int) -> dict:
    """Train ``family`` for ``cpu_seconds`` of CPU time; -> row of the table."""
    preset = PRESETS[family]
    name = f"bench-{family}"
    base = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "train",
        "--preset",
        preset,
        "--set",
        f"name={name}",
        "--set",
        f"work_dir={work}",
        "--set",
        f"data.manifest={manifest}",
        "--set",
        "data.num_workers=0",
        "--set",
        "tracking.enabled=false",
        "--set",
        "tracking.register=false",
        "--set",
        "eval.at_end=true",
        "--set",
        "eval.num_images=1000",
        "--set",
        "train.snapshot_ticks=0",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    run_dir = work / "runs" / name
    log = (work / f"{name}.log").open("w")
    start = time.time()
    proc = subprocess.Popen(
        base + ["--set", "train.total_kimg=100000", "--set", "train.checkpoint_ticks=0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    used = 0.0
    while proc.poll() is None:
        time.sleep(1.0)
        used = max(used, _cpu_seconds(proc))
        if used >= cpu_seconds:
            proc.send_signal(signal.SIGTERM)
            break
    proc.wait()
    wall = time.time() - start
    kimg = _reached_kimg(run_dir)
    # resume with nothing left to train: final export, grid and evaluation of the final G
    finish = subprocess.run(
        base + ["--set", f"train.total_kimg={kimg}"], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    log.close()
    if finish.returncode != 0:
        raise RuntimeError(f"{family}: final evaluation failed; see {log.name}")
    config = json.loads((run_dir / "export" / "generator.json").read_text())
    row = {"family": family, "preset": preset, "kimg": kimg, "cpu_s": used, "wall_s": wall}
    row.update({k: config["meta"].get("metrics", {}).get(k, float("nan")) for k in METRICS})
    row["grid"] = str(run_dir / "samples" / "latest.png")
    return row


def _reached_kimg(run_dir: Path) -> float:
    """kimg of the latest checkpoint (what SIGTERM saved; named by images seen)."""
    from training.checkpoint import PREFIX, latest_checkpoint

    ckpt = latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise RuntimeError(f"{run_dir}: no checkpoint after SIGTERM; see the log")
    return int(Path(ckpt).name[len(PREFIX) :]) / 1000


def side_by_side(rows: list[dict], out: Path) -> Path:
    """One picture: each family's grid under its name."""
    from PIL import Image, ImageDraw

    grids = [Image.open(r["grid"]).convert("RGB") for r in rows]
    width = max(g.width for g in grids)
    label = 18
    canvas = Image.new("RGB", (width * len(grids) + 8 * (len(grids) - 1), grids[0].height + label))
    canvas.paste((255, 255, 255), (0, 0, canvas.width, canvas.height))
    draw = ImageDraw.Draw(canvas)
    for i, (row, grid) in enumerate(zip(rows, grids)):
        x = i * (width + 8)
        draw.text((x + 2, 2), f"{row['family']} ({row['kimg']:.0f} kimg)", fill=(0, 0, 0))
        canvas.paste(grid, (x, label))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def table(rows: list[dict], cpu_seconds: float) -> str:
    head = (
        f"| family (preset) | kimg in {cpu_seconds:.0f} CPU-s | coverage | class entropy | "
        "confident (real) | classifier FD |\n|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['family']} ({r['preset']}) | {r['kimg']:.1f} | {r['coverage']:.2f} | "
        f"{r['class_entropy']:.3f} | {r['confident']:.2f} ({r['confident_real']:.2f}) | "
        f"{r['classifier_fd']:.1f} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-seconds", type=float, default=300.0, help="CPU budget per family")
    parser.add_argument("--families", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at the same time")
    parser.add_argument("--work", default="work/bench-families", help="scratch folder")
    parser.add_argument("--out", default="docs/families", help="grids + side-by-side picture")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    manifest = prep(work)

    def one(family: str) -> dict:
        print(f"{family}: training for {args.cpu_seconds:.0f} CPU-s ...", flush=True)
        row = train_for(family, manifest, work, args.cpu_seconds, args.threads)
        print(f"{family}: {row['kimg']:.1f} kimg in {row['wall_s']:.0f} s wall", flush=True)
        return row

    # runs in parallel share the machine; the budget is CPU time, so each still gets its share
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        rows = list(pool.map(one, args.families))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        dst = out / f"grid-{row['family']}.png"
        dst.write_bytes(Path(row["grid"]).read_bytes())
        row["grid"] = str(dst)
    picture = side_by_side(rows, out / "side-by-side.png")
    print(table(rows, args.cpu_seconds))
    print(f"grids and {picture} written")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
