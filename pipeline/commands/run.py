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
import shlex
import time
from pathlib import Path

from .common import EXIT_DIVERGED, EXIT_INTERRUPTED, add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default_preset="digits")
    parser.add_argument("--seeds", default="0-63", help="seeds of the final grid (default 0-63)")
    parser.add_argument(
        "--psi", type=float, default=1.0, help="truncation psi of the final grid (default 1.0)"
    )


def main(args: argparse.Namespace) -> int:
    from data_prep import shard_dataset
    from deploy.generator import load_generator, save_grid
    from deploy.registry import register_export
    from deploy.sampling import parse_seeds
    from pipeline.config import config_to_yaml
    from training.tracking import check_tracking_server, resolve_tracking_uri
    from training.trainer import train

    cfg = config_from_args(args)
    if cfg.model.family == "cyclegan":  # two domains in, a translator out
        from .run_translation import main as run_translation

        return run_translation(cfg, args)
    seeds = parse_seeds(args.seeds)
    started = time.time()
    uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
    if cfg.tracking.enabled:
        check_tracking_server(uri)  # the registry is needed at stage 3: fail now, in seconds

    print(f"[1/4] prep: {cfg.prep.source} -> {cfg.data_dir}", flush=True)
    manifest = shard_dataset(cfg.prep, out=cfg.data_dir)
    print(f"      {manifest.num_samples} images in {len(manifest.shards)} shards", flush=True)

    print(f"[2/4] train: {cfg.model.family}, {cfg.train.total_kimg:g} kimg", flush=True)
    result = train(cfg, config_yaml=config_to_yaml(cfg))
    if result.status != "finished" or result.export_dir is None:
        print(f"training {result.status}; re-run the same command to resume")
        return EXIT_DIVERGED if result.status == "diverged" else EXIT_INTERRUPTED

    print(f"[3/4] register: {cfg.tracking.model_name} @ {cfg.tracking.alias}", flush=True)
    if not cfg.tracking.enabled:
        print("      tracking.enabled=false: generating from the local export instead")
        model_uri = str(result.export_dir)
    else:
        info = register_export(
            result.export_dir,
            model_name=cfg.tracking.model_name,
            alias=cfg.tracking.alias,
            tracking_uri=uri,
            run_id=result.mlflow_run_id,
        )
        model_uri = f"models:/{info.name}@{cfg.tracking.alias}" if cfg.tracking.alias else info.uri

    print(f"[4/4] generate: {model_uri}", flush=True)
    generator = load_generator(model_uri, tracking_uri=uri)
    # conditional models: one class per grid column-cycle, so every class shows up
    labels = [s % generator.c_dim for s in seeds] if generator.c_dim else None
    images = generator.generate(seeds, psi=args.psi, labels=labels)
    grid_path = save_grid(images, Path(cfg.work_dir) / "outputs" / f"{cfg.name}-grid.png")

    store = uri
    ui = (
        f"mlflow ui --backend-store-uri {shlex.quote(store)}"
        if store.startswith(("sqlite:", "file:"))
        else f"open {store} in a browser"
    )
    print()
    print(f"ganforge run finished in {time.time() - started:.0f} s")
    print(f"  shards:       {cfg.data_dir} ({manifest.num_samples} images, manifest.json)")
    print(
        f"  run:          {result.run_dir} ({result.images_seen / 1000:.1f} kimg, checkpoints/, export/, samples/)"
    )
    print(
        f"  mlflow run:   {result.mlflow_run_id} in experiment {cfg.tracking.experiment!r} at {store}"
    )
    print(f"  model:        {model_uri}")
    evals = {k.split("/", 1)[1]: v for k, v in result.metrics.items() if k.startswith("metrics/")}
    if evals:
        print(
            "  quality:      "
            + ", ".join(f"{k} {v:.3f}" for k, v in evals.items())
            + (
                " (coverage: share of the 10 digit classes the generator produces; 1.0 = no mode collapse)"
                if "coverage" in evals
                else ""
            )
        )
    print(f"  final grid:   {grid_path}")
    print(f"  open the UI:  {ui}")
    return 0
