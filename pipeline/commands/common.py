"""Arguments shared by the subcommands that take a run config."""

from __future__ import annotations

import argparse

from pipeline.config import RunConfig, list_presets, load_config


def add_config_arguments(parser: argparse.ArgumentParser, default_preset: str | None = None) -> None:
    parser.add_argument(
        "--preset", "-p", default=default_preset,
        help=f"built-in preset ({', '.join(list_presets())}) or a YAML file (default: {default_preset or 'digits'})",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
        help="override one config value, e.g. --set train.batch=64 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.preset, args.overrides)
