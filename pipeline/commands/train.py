"""Train a GAN from a preset (+ overrides).

Single process:            ganforge train --preset cifar --set data.manifest=/data/cifar
Several processes/nodes:   accelerate launch --config_file accelerate_config.yaml -m pipeline.cli train --preset ...

Resumes automatically from the run's newest valid checkpoint (train.resume=auto; a corrupt one is
skipped with a warning naming it) into the same MLflow run. SIGTERM/SIGINT save a checkpoint,
mark the MLflow run KILLED and exit with code 75 (EX_TEMPFAIL: "run me again"), so schedulers can
requeue (configs/slurm/train.sbatch does). With tracking.register=true the exported generator is
registered in the MLflow Model Registry when training finishes (alias tracking.alias); an
interrupted or diverged run never registers.

Exit codes: 0 finished, 2 user error (one line), 3 diverged (non-finite loss), 75 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

from .common import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    add_config_arguments,
    check_manifest_path,
    config_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--resume", default=None, help="auto | a checkpoint folder | none (overrides train.resume)"
    )
    parser.add_argument(
        "--no-register",
        action="store_true",
        help="do not register the generator even with tracking.register=true (`ganforge run` "
        "registers it itself)",
    )
    parser.add_argument(
        "--result-json",
        default=None,
        metavar="PATH",
        help="write the outcome (status, kimg, export, checkpoint, grid, MLflow run id, final "
        "metrics) to PATH as JSON, on any status (main process)",
    )


def main(args: argparse.Namespace) -> int:
    from pipeline.config import config_to_yaml
    from training.trainer import train

    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"train.resume={'null' if args.resume.lower() == 'none' else args.resume}")
    args.overrides = overrides
    cfg = config_from_args(args)
    check_manifest_path(cfg.manifest)
    result = train(cfg, config_yaml=config_to_yaml(cfg))
    if args.result_json and os.environ.get("RANK", "0") == "0":
        from pathlib import Path

        from pipeline.launch import result_to_json
        from training.networks.export import atomic_write

        text = result_to_json(result)
        atomic_write(args.result_json, lambda tmp: Path(tmp).write_text(text))
    if result.status == "diverged":
        return EXIT_DIVERGED
    if result.status == "interrupted":
        if os.environ.get("RANK", "0") != "0":  # the main process says it once
            return EXIT_INTERRUPTED
        print(
            f"interrupted at {result.images_seen / 1000:.1f} kimg; checkpoint {result.last_checkpoint}; "
            f"run the same command again to resume (exit code {EXIT_INTERRUPTED})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if (
        result.export_dir
        and cfg.tracking.enabled
        and cfg.tracking.register
        and not args.no_register
    ):
        from training.tracking import check_tracking_server, resolve_tracking_uri

        from .run_stages import register

        uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
        try:
            check_tracking_server(uri)
        except ValueError as exc:
            raise ValueError(
                f"training finished, but the generator was not registered: {exc}; later run "
                f"`ganforge register {result.export_dir} --name {cfg.tracking.model_name}"
                f"{' --alias ' + cfg.tracking.alias if cfg.tracking.alias else ''} --tracking-uri {uri}`"
            ) from None
        info = register(cfg, result, uri)
        print(f"registered {info.uri} (version {info.version})")
    print(
        f"done: {result.images_seen / 1000:.1f} kimg; export {result.export_dir}; grid {result.grid_path}"
    )
    return 0
