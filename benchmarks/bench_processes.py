"""Processes vs threads on a GPU-less machine: s/kimg of the `digits` preset, printed as a table.

What `ganforge run --processes auto` should do without a GPU: the same training (`ganforge train
--preset digits`, real data, one host sync per tick) as one process with the default intra-op
threads, one process with one thread, and N processes launched by `torch.distributed.run` with
one thread each (what `ganforge run --processes N` starts). The median of the per-tick
`timing/sec_per_kimg` after the first tick is reported; evaluation, checkpoints, grids and
tracking are off.

    python benchmarks/bench_processes.py --data work/data/digits-32 --kimg 10 --processes 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(label: str, launcher: list[str], env: dict, data: str, kimg: float, work: Path) -> dict:
    sets = {
        "data.manifest": data,
        "work_dir": str(work / label),
        "name": "bench",
        "train.total_kimg": kimg,
        "train.tick_kimg": kimg / 5,
        "eval.at_end": "false",
        "eval.every_kimg": 0,
        "tracking.enabled": "false",
        "train.checkpoint_ticks": 0,
        "train.snapshot_ticks": 0,
    }
    cmd = launcher + ["-m", "pipeline.cli", "train", "--preset", "digits"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    started = time.time()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    lines = (work / label / "runs" / "bench" / "metrics.jsonl").read_text().splitlines()
    ticks = [json.loads(x)["timing/sec_per_kimg"] for x in lines if "timing/sec_per_kimg" in x]
    timed = ticks[1:] or ticks
    return {
        "label": label,
        "median": statistics.median(timed),
        "range": f"{min(timed):.2f}-{max(timed):.2f}",
        "wall": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the digits shards (ganforge prep output)")
    parser.add_argument("--kimg", type=float, default=10.0, help="kimg per configuration")
    parser.add_argument("--processes", type=int, default=2, help="processes of the launch row")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    base["PYTHONPATH"] = str(ROOT) + os.pathsep + base.get("PYTHONPATH", "")
    python = [sys.executable]
    launch = python + [
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={args.processes}",
    ]
    configs = [
        (f"1 process, default threads ({cores} cores)", python, base),
        ("1 process, 1 thread", python, {**base, "OMP_NUM_THREADS": "1"}),
        (f"{args.processes} processes, 1 thread each", launch, {**base, "OMP_NUM_THREADS": "1"}),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, launcher, env) in enumerate(configs):
            row = run(str(i), launcher, env, args.data, args.kimg, Path(tmp))
            rows.append({**row, "label": label})
            print(f"done: {label}", file=sys.stderr, flush=True)
    print(f"digits preset, {args.kimg:g} kimg per row, median of ticks 2-5")
    print("| configuration | s/kimg (median) | min-max | wall s |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['median']:.2f} | {row['range']} | {row['wall']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
