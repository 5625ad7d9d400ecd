"""Arguments shared by the subcommands that take a run config."""

from __future__ import annotations

import argparse

from pipeline.config import RunConfig, list_presets, load_config


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


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.preset, args.overrides)


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
    return args.tracking_uri or default_tracking_uri(args.work_dir)
