"""Generate images, grids or latent interpolations from a generator.

The model is a registry reference (models:/NAME@ALIAS, models:/NAME/VERSION), runs:/RUN_ID/generator,
a run id, or a local export folder. Seed s always gives the same image (its latent is
np.random.RandomState(s).randn(z_dim), as in NVlabs' gen_images.py):

  ganforge generate --model models:/digits-gan@champion --seeds 0-63 --psi 0.7 --out grid.png
  ganforge generate --model work/runs/digits/export --seeds 0-9 --separate --out images/
  ganforge generate --model models:/digits-gan@champion --seeds 0-5 --interpolate --out walk.gif
  ganforge generate --model models:/cond-gan@champion --seeds 0-9 --labels 3        # conditional
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_argument, add_tracking_arguments, tracking_uri_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument(
        "--seeds", default="0-15", help="seeds, e.g. 0-63 or 1,5,9 (default: %(default)s)"
    )
    parser.add_argument(
        "--max-seeds",
        type=int,
        default=10_000,  # deploy.sampling.MAX_SEEDS (not imported: the CLI loads lazily)
        help="refuse more seeds than this in one call (default: %(default)s; every image is "
        "held in memory before writing)",
    )
    parser.add_argument(
        "--psi", type=float, default=1.0, help="truncation psi (1: none; 0.5-0.8 typical)"
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="class ids or names for a conditional model: one for all, or one per seed (comma-separated)",
    )
    parser.add_argument(
        "--noise-mode",
        default="const",
        choices=["const", "random", "none"],
        help="per-pixel noise (default: %(default)s, reproducible)",
    )
    parser.add_argument(
        "--out",
        "-o",
        default=None,
        help="output: a grid image (default grid.png), a folder with --separate, "
        "or a .gif/.mp4 with --interpolate",
    )
    parser.add_argument(
        "--separate",
        action="store_true",
        help="one PNG per seed (seedNNNN.png) in the --out folder",
    )
    parser.add_argument("--cols", type=int, default=None, help="grid columns (default: square-ish)")
    parser.add_argument(
        "--interpolate",
        action="store_true",
        help="write an animated loop through the seeds' latents instead of stills",
    )
    parser.add_argument(
        "--frames", type=int, default=24, help="frames between two seeds with --interpolate"
    )
    parser.add_argument("--fps", type=int, default=24, help="animation frame rate")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    add_tracking_arguments(parser)


def parse_labels(text: str | None) -> list[int | str] | None:
    if text is None:
        return None
    return [int(p) if p.strip().isdigit() else p.strip() for p in text.split(",") if p.strip()]


def main(args: argparse.Namespace) -> int:
    tracking_uri = tracking_uri_from_args(args)
    from deploy.generator import load_generator, save_animation, save_grid, save_images
    from deploy.sampling import parse_seeds

    if args.max_seeds < 1:
        raise ValueError(f"--max-seeds: must be >= 1, got {args.max_seeds}")
    seeds = parse_seeds(args.seeds, limit=args.max_seeds)
    labels = parse_labels(args.labels)
    generator = load_generator(args.model, device=args.device, tracking_uri=tracking_uri)
    if args.interpolate:
        if labels is not None and len(labels) != 1:
            raise ValueError("--labels: an interpolation uses one class; give a single id or name")
        frames = generator.interpolate(
            seeds,
            frames_per_seed=args.frames,
            psi=args.psi,
            label=None if labels is None else labels[0],
            noise_mode=args.noise_mode,
        )
        path = save_animation(frames, args.out or "interpolation.gif", fps=args.fps)
        print(f"wrote {path} ({len(frames)} frames through seeds {args.seeds})")
        return 0
    images = generator.generate(seeds, psi=args.psi, labels=labels, noise_mode=args.noise_mode)
    if args.separate:
        paths = save_images(images, args.out or "images", [f"seed{s:04d}" for s in seeds])
        print(f"wrote {len(paths)} images to {Path(args.out or 'images')}/")
    else:
        path = save_grid(images, args.out or "grid.png", cols=args.cols)
        print(f"wrote {path} ({len(images)} images)")
    return 0
