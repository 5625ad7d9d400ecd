"""Shard an image collection into training-ready WebDataset tars + a manifest.

  ganforge prep --source SRC --out DIR [options]    shard (resumes if interrupted)
  ganforge prep verify DIR_OR_URL                   check every shard against the manifest
  ganforge prep merge DIR                           after multi-node prep: check + write manifest

SRC: a folder (recursive; labels from first-level subfolders), a .zip/.tar/.tar.gz archive (read
in place), cifar-10-python.tar.gz, an MNIST *-images-idx3-ubyte[.gz] file, a .csv/.jsonl list
(path, optional label), or `digits` (scikit-learn's built-in 8x8 digits).
DIR: a local folder or any fsspec URL (s3://, gs://, ...).

Multi-node: run the same command N times with --num-partitions N --partition K (a SLURM array
or an indexed job), then `ganforge prep merge DIR` once; the result equals a single-job run.
Bad inputs are skipped and listed in DIR/skipped.jsonl; re-running after a crash keeps every
finished shard (checked by sha256) and redoes only the rest.
"""

from __future__ import annotations

import argparse
import sys

from data_prep import PrepConfig, merge_partitions, shard_dataset, verify_dataset
from pipeline.configtools import from_dict, to_dict

# flag -> PrepConfig field, for the flags that map one to one
FIELDS = {
    "source": "source",
    "out": "out",
    "resolution": "resolution",
    "channels": "channels",
    "transform": "transform",
    "resize_filter": "resize_filter",
    "format": "image_format",
    "jpeg_quality": "jpeg_quality",
    "png_level": "png_compress_level",
    "fast": "fast",
    "labels": "labels",
    "shard_samples": "shard_samples",
    "shard_bytes": "shard_bytes",
    "min_shards": "min_shards",
    "val_fraction": "val_fraction",
    "seed": "seed",
    "workers": "workers",
    "num_partitions": "num_partitions",
    "partition": "partition",
    "min_size": "min_size",
    "max_image_pixels": "max_image_pixels",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=["shard", "verify", "merge"],
        default="shard",
        help="shard (default), verify DIR_OR_URL, or merge DIR",
    )
    parser.add_argument(
        "target",
        nargs="?",
        metavar="DIR_OR_URL",
        help="for verify/merge: the prep output folder or URL",
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--source", "-s", help="input collection (see above; default: digits)")
    io.add_argument("--out", "-o", help="output folder or fsspec URL")
    io.add_argument(
        "--labels",
        choices=["auto", "none", "folder"],
        help="auto (default): labels when the source has them; folder: first-level "
        "subfolder names; none: unlabelled",
    )
    io.add_argument(
        "--preset", "-p", help="take prep options (and the default --out) from this preset"
    )
    image = parser.add_argument_group("images")
    image.add_argument(
        "--resolution",
        "-r",
        type=int,
        help="output side in pixels, power of two 4..2048 (default 32)",
    )
    image.add_argument(
        "--channels", type=int, choices=[1, 3], help="3: RGB (default); 1: grayscale"
    )
    image.add_argument(
        "--transform",
        choices=["center-crop", "center-crop-wide", "none"],
        help="center-crop (default): central square; center-crop-wide: central 2:1 "
        "strip on a black square; none: inputs must already be RESxRES (others are skipped)",
    )
    image.add_argument(
        "--resize-filter",
        choices=["lanczos", "bicubic", "box"],
        help="resampling filter (default lanczos); box reproduces published FID setups "
        "that downsampled with a box filter - use it to compare FID with them",
    )
    image.add_argument(
        "--format",
        choices=["png", "webp", "jpeg"],
        help="encoding in the shards: lossless png (default) or webp, or jpeg at --jpeg-quality",
    )
    image.add_argument("--jpeg-quality", type=int, help="JPEG quality 1..100 (default 95)")
    image.add_argument(
        "--png-level",
        type=int,
        help="PNG zlib level 0..9 (default 1; 0: stored, as dataset_tool; higher: a few %% "
        "smaller, slower; pixels never change)",
    )
    image.add_argument(
        "--fast",
        action="store_true",
        default=None,
        help="reduced-scale JPEG decoding + reducing gap: several x faster on large photos, "
        "NOT pixel-identical (see docs/benchmarks.md); not for FID against published numbers",
    )
    image.add_argument(
        "--min-size",
        type=int,
        help="skip images whose shorter side is below this (default resolution/8; 0: none)",
    )
    image.add_argument(
        "--max-image-pixels", type=int, help="skip larger images as decompression bombs"
    )
    shards = parser.add_argument_group("shards")
    shards.add_argument("--shard-samples", type=int, help="max samples per shard (default 2000)")
    shards.add_argument(
        "--shard-bytes", type=int, help="target max bytes per shard (default 1e9; 0: no limit)"
    )
    shards.add_argument(
        "--min-shards", type=int, help="at least this many shards per split (default 16)"
    )
    shards.add_argument(
        "--val-fraction", type=float, help="fraction held out in val-*.tar shards (default 0)"
    )
    shards.add_argument("--seed", type=int, help="seed of the global shuffle (default 0)")
    run = parser.add_argument_group("execution")
    run.add_argument("--workers", "-j", type=int, help="worker processes (default 0: all cores)")
    run.add_argument(
        "--num-partitions", type=int, help="split the job into N disjoint partitions (multi-node)"
    )
    run.add_argument("--partition", type=int, help="which partition this job runs, 0..N-1")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--eval-reference",
        metavar="METRICS",
        help="also cache the real-data statistics for these eval metrics (e.g. fid,kid or "
        "coverage), so `ganforge eval` and training-time evaluation start at once",
    )
    run.add_argument(
        "--inception-weights",
        help="with --eval-reference fid/kid/pr/is: the Inception weights file",
    )
    run.add_argument(
        "--no-decode", action="store_true", help="verify: check checksums and counts only"
    )


def build_config(args: argparse.Namespace):
    """PrepConfig from the preset (if any) overridden by the flags; errors name the field."""
    values: dict = {}
    out_default = None
    if args.preset:
        from pipeline.config import load_config  # imports the trainer: only when asked for

        run_cfg = load_config(args.preset, [])
        values = to_dict(run_cfg.prep)
        out_default = run_cfg.data_dir
    values.update(
        {
            field: getattr(args, flag)
            for flag, field in FIELDS.items()
            if getattr(args, flag, None) is not None
        }
    )
    cfg = from_dict(PrepConfig, values)
    return cfg, cfg.out or out_default


def main(args: argparse.Namespace) -> int:
    progress = not args.no_progress and sys.stderr.isatty()
    if args.action in ("verify", "merge"):
        target = args.target or args.out
        if not target:
            raise ValueError(
                f"prep {args.action}: give the prep output folder, e.g. "
                f"`ganforge prep {args.action} work/data/digits-32`"
            )
        if args.action == "merge":
            manifest = merge_partitions(target)
            print(
                f"merged {len(manifest.shards)} shards, {manifest.num_samples} samples -> {target}/manifest.json"
            )
            return 0
        problems = verify_dataset(
            target, workers=args.workers or 1, progress=progress, decode=not args.no_decode
        )
        for problem in problems:
            print(problem)
        print(
            f"{target}: {'OK' if not problems else f'{len(problems)} problem(s)'}", file=sys.stderr
        )
        return 1 if problems else 0
    if args.target:
        raise ValueError(f"unexpected argument {args.target!r}; the source is given with --source")
    cfg, out = build_config(args)
    if not out:
        raise ValueError("out: give the output folder with --out DIR (or a --preset)")
    manifest = shard_dataset(cfg, out=out, progress=progress)
    skipped = sum(manifest.skipped.values())
    where = (
        out
        if cfg.num_partitions == 1
        else f"{out} (partition {cfg.partition}/{cfg.num_partitions})"
    )
    print(
        f"{manifest.num_samples} samples in {len(manifest.shards)} shards -> {where}"
        + (
            f"; {skipped} inputs skipped ({', '.join(f'{k}: {v}' for k, v in manifest.skipped.items())}), "
            f"see {out}/skipped.jsonl"
            if skipped
            else ""
        )
    )
    if cfg.num_partitions > 1:
        print(f"when all {cfg.num_partitions} partitions are done: ganforge prep merge {out}")
    elif args.eval_reference:
        from training.metrics import EvalConfig, precompute_reference, preflight

        metrics = [m.strip() for m in args.eval_reference.split(",") if m.strip()]
        inception = any(m in ("fid", "kid", "pr", "is") for m in metrics)
        ecfg = EvalConfig(
            metrics=metrics,
            feature_extractor="inception" if inception else "classifier",
            inception_weights=args.inception_weights,
            num_workers=0,
        )
        preflight(manifest, ecfg)
        device = "cuda" if torch_cuda_available() else "cpu"
        names = precompute_reference(manifest, ecfg, device=device, log=print)
        print(f"cached reference statistics: {', '.join(names)}")
    return 0


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
