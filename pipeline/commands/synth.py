"""Write a synthetic dataset: a generator's samples as labelled WebDataset shards + manifest.

The output is a prep dataset like any other (`ganforge prep verify DIR` checks it, `ganforge
train --set data.manifest=DIR` trains on it). Rerunning the same command resumes: finished
shards are kept.

  ganforge synth --model models:/digits-cond@champion --count 10000 --out work/synth
  ganforge synth --model ... --count 5000 --psi 0.7 --classes 3,5 --workers 4 --out work/s35
  ganforge synth --model ... --count 100000 --devices cuda:0,cuda:1 --workers 2 --out s/

--classes: balanced (default: equal counts), uniform (independent uniform draws) or the class
ids/names to sample (balanced among them). Image i is the sample of seed (--seed + i).
"""

from __future__ import annotations

import argparse

from .common import add_model_argument, add_tracking_arguments, tracking_uri_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--count", "-n", type=int, required=True, help="images to write")
    parser.add_argument("--out", "-o", required=True, help="output folder (shards + manifest.json)")
    parser.add_argument(
        "--psi", type=float, default=1.0, help="truncation psi (default: %(default)s)"
    )
    parser.add_argument(
        "--classes", default="balanced", help="balanced | uniform | ids/names, e.g. 3,5"
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: %(default)s)")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default: %(default)s)"
    )
    parser.add_argument(
        "--devices", default="cpu", help="comma-separated torch devices for the workers"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_tracking_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from deploy.synth import SynthConfig, synthesize_dataset

    cfg = SynthConfig(
        count=args.count,
        psi=args.psi,
        classes=args.classes,
        seed=args.seed,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
    )
    manifest = synthesize_dataset(
        args.model,
        args.out,
        cfg,
        workers=args.workers,
        devices=[d.strip() for d in args.devices.split(",") if d.strip()],
        tracking_uri=tracking_uri_from_args(args),
        progress=not args.quiet,
    )
    print(
        f"wrote {manifest.num_samples} images in {len(manifest.shards)} shards + manifest.json "
        f"to {args.out} ({manifest.num_classes or 'no'} classes); check: ganforge prep verify {args.out}"
    )
    return 0
