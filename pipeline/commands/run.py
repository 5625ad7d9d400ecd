"""Run the whole pipeline end to end (default: the built-in digits data, preset ``digits``):

  1. prep      built-in digits -> WebDataset shards + manifest
  2. train     StyleGAN2 on Accelerate, tracked in MLflow (local sqlite store by default,
               or $MLFLOW_TRACKING_URI)
  3. register  the exported G_ema in the MLflow Model Registry with an alias (champion)
  4. generate  an image grid from models:/<name>@<alias>

Re-running the same command resumes where it stopped (finished stages are reused).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .common import add_config_arguments, add_processes_argument, config_from_args
from .run_stages import run_pipeline

if TYPE_CHECKING:
    from pipeline.config import RunConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default_preset="digits")
    parser.add_argument("--seeds", default="0-63", help="seeds of the final grid (default 0-63)")
    parser.add_argument(
        "--psi", type=float, default=1.0, help="truncation psi of the final grid (default 1.0)"
    )
    add_processes_argument(parser)


def main(args: argparse.Namespace) -> int:
    from data_prep import shard_dataset
    from deploy.generator import load_generator, save_grid
    from deploy.sampling import parse_seeds

    cfg = config_from_args(args)
    if cfg.model.family == "cyclegan":  # two domains in, a translator out
        from .run_translation import main as run_translation

        return run_translation(cfg, args)
    seeds = parse_seeds(args.seeds)

    def prep(cfg: RunConfig) -> tuple[RunConfig, str]:
        print(f"[1/4] prep: {cfg.prep.source} -> {cfg.data_dir}", flush=True)
        manifest = shard_dataset(cfg.prep, out=cfg.data_dir)
        print(f"      {manifest.num_samples} images in {len(manifest.shards)} shards", flush=True)
        return cfg, f"  shards:       {cfg.data_dir} ({manifest.num_samples} images, manifest.json)"

    def generate(cfg: RunConfig, model_uri: str, uri: str) -> list[str]:
        print(f"[4/4] generate: {model_uri}", flush=True)
        generator = load_generator(model_uri, tracking_uri=uri)
        # conditional models: one class per grid column-cycle, so every class shows up
        labels = [s % generator.c_dim for s in seeds] if generator.c_dim else None
        images = generator.generate(seeds, psi=args.psi, labels=labels)
        grid_path = save_grid(images, Path(cfg.work_dir) / "outputs" / f"{cfg.name}-grid.png")
        return [f"  final grid:   {grid_path}"]

    return run_pipeline(
        cfg, prep=prep, deliver=generate, use="generating from", processes=args.processes
    )
