"""Arguments shared by the subcommands that take a run config."""

from __future__ import annotations

import argparse

from pipeline.config import RunConfig, list_presets, load_config

# Exit codes of every subcommand (documented in docs/failure-modes.md).
EXIT_USER_ERROR = 2
"""A user mistake (config key/value, missing or malformed file); one line on stderr."""
EXIT_DIVERGED = 3
"""Training stopped on a non-finite loss; the last good checkpoint is kept."""
EXIT_INTERRUPTED = 75
"""SIGTERM/SIGINT: a checkpoint was saved; run the same command again to resume (EX_TEMPFAIL)."""


def add_config_arguments(
    parser: argparse.ArgumentParser, default_preset: str | None = None
) -> None:
    parser.add_argument(
        "--preset",
        "-p",
        default=default_preset,
        help=f"built-in preset ({', '.join(list_presets())}) or a YAML file (default: {default_preset or 'digits'})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one config value, e.g. --set train.batch=64 (repeatable)",
    )


def add_processes_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes",
        default="auto",
        metavar="N|auto",
        help="train with N local processes (torch.distributed.run): auto = one per GPU that "
        "divides train.batch, 1 without a GPU (default auto; 1: in this "
        "process)",
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.preset, args.overrides)


def check_manifest_path(manifest: str) -> None:
    """A local data.manifest must be a prep output folder (or its manifest.json): a one-line
    error for any other file, instead of NotADirectoryError deep in the loader."""
    from pathlib import Path

    if "://" in manifest:
        return
    path = Path(manifest)
    if path.is_file() and path.name != "manifest.json":
        raise ValueError(
            f"data.manifest: {manifest} is a file; point it at the folder `ganforge prep` wrote "
            f"(the one holding manifest.json and the shards)"
        )


MODEL_HELP = "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/generator, a run id, or an export folder"


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", required=True, help=MODEL_HELP)


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<work-dir>/mlflow.db)",
    )
    parser.add_argument(
        "--work-dir",
        default="work",
        help="work dir of the local MLflow store (default: %(default)s)",
    )


def tracking_uri_from_args(args: argparse.Namespace) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the work dir's sqlite store; and no MLflow
    download progress bars in CLI output."""
    import os

    from training.tracking import default_tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = args.tracking_uri or default_tracking_uri(args.work_dir)
    check_tracking_uri_for(uri, getattr(args, "model", None))
    return uri


def check_tracking_uri_for(uri: str | None, model: str | None) -> None:
    """A dead tracking server fails in seconds with one line, when the command needs it (always,
    unless ``model`` is a local folder)."""
    from pathlib import Path

    from training.tracking import check_tracking_server

    if uri is None or (model is not None and "://" not in model and Path(model).exists()):
        return
    check_tracking_server(uri)
