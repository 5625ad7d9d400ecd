"""Class-classifier quality of a digits generator at several truncation psi: prints a table.

The `digits` preset's goal (issue 12): the share of generated samples that the coverage
classifier reads with confidence >= 0.9 (``confident``) at >= 0.9 x the real images' share
(``confident_real``), with all ten classes covered. Truncation trades diversity for that, so the
table shows coverage, class entropy and classifier FD beside it: a psi that buys confidence by
dropping classes or flattening the class histogram shows up here.

    python benchmarks/bench_digits_psi.py --model work/runs/digits/export \
        --data work/data/digits-32 --psi 1,0.8,0.7,0.6

Each psi is one `ganforge eval --metrics coverage --feature-extractor classifier` (the same
classifier, seeds and image count as the preset's end-of-training evaluation).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from training.metrics import EvalConfig
from training.metrics.evaluation import result_names

# the coverage evaluation's results, in its order (the one list: training/metrics/evaluation.py)
COLUMNS = tuple(result_names(EvalConfig(metrics=["coverage"], feature_extractor="classifier")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="export folder or models:/NAME@ALIAS")
    parser.add_argument("--data", required=True, help="the digits manifest (file or folder)")
    parser.add_argument("--psi", default="1,0.8,0.7,0.6", help="comma-separated psi values")
    parser.add_argument("--num-images", type=int, default=1000, help="generated images per psi")
    parser.add_argument("--tracking-uri", default=None, help="for a models:/ URI")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for psi in [float(p) for p in args.psi.split(",") if p.strip()]:
            out = Path(tmp) / f"psi-{psi}.json"
            cmd = [
                sys.executable,
                "-m",
                "pipeline.cli",
                "eval",
                "--model",
                args.model,
                "--data",
                args.data,
                "--metrics",
                "coverage",
                "--feature-extractor",
                "classifier",
                "--num-images",
                str(args.num_images),
                "--workers",
                "0",
                "--device",
                "cpu",
                "--no-tags",
                "--psi",
                str(psi),
                "--out",
                str(out),
            ]
            if args.tracking_uri:
                cmd += ["--tracking-uri", args.tracking_uri]
            started = time.time()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            metrics = json.loads(out.read_text())["metrics"]
            rows.append((psi, metrics, time.time() - started))

    print(f"model {args.model}, {args.num_images} images per psi")
    print("| psi | " + " | ".join(COLUMNS) + " | confident / real | s |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    for psi, m, seconds in rows:
        ratio = m["confident"] / m["confident_real"] if m.get("confident_real") else float("nan")
        cells = " | ".join(f"{m[c]:.3f}" for c in COLUMNS)
        print(f"| {psi:g} | {cells} | {ratio:.3f} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
