"""Register an exported generator in the MLflow Model Registry.

Logs the export folder (generator.json + weights.safetensors, or a run directory holding
export/) as an MLflow pyfunc that needs no ganforge to load, creates a new version of the
registered model, tags it (dataset, kimg, family, resolution, metric.*) and optionally points an
alias at it:

  ganforge register work/runs/digits/export --name digits-gan --alias champion
  ganforge register --export work/runs/digits/export --name digits-gan      # same, as an option
  ganforge register work/runs/digits --alias champion --promote-if-better fid50k_full

The tracking server comes from --tracking-uri, else $MLFLOW_TRACKING_URI, else the local store
sqlite:///<work-dir>/mlflow.db. Load the result with `ganforge generate --model
models:/NAME@ALIAS` or mlflow.pyfunc.load_model("models:/NAME@ALIAS").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_tracking_arguments, tracking_uri_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "export",
        nargs="?",
        default=None,
        help="export folder (generator.json + weights.safetensors) or a run directory containing export/",
    )
    parser.add_argument(
        "--export",
        dest="export_option",
        metavar="EXPORT",
        default=None,
        help="the same, as an option",
    )
    parser.add_argument(
        "--name", default="ganforge-generator", help="registered model name (default: %(default)s)"
    )
    parser.add_argument(
        "--alias", default=None, help="alias to point at the new version, e.g. champion"
    )
    parser.add_argument(
        "--promote-if-better",
        metavar="METRIC",
        default=None,
        help="move --alias only if the new version's METRIC (from the export's meta.metrics) "
        "beats the current holder's; lower is better for fid/kid/distance names",
    )
    add_tracking_arguments(parser)
    parser.add_argument(
        "--run-id", default=None, help="log the model into this existing MLflow run"
    )
    parser.add_argument(
        "--experiment", default="ganforge", help="experiment of the new run (default: %(default)s)"
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra version tag (repeatable)",
    )


def export_folder(path: str | None) -> Path:
    """The export folder itself, or ``<run dir>/export``."""
    if not path:
        raise ValueError(
            "export: give the export folder (or run directory), e.g. "
            "`ganforge register work/runs/NAME/export --alias champion`"
        )
    folder = Path(path)
    if (folder / "export" / "generator.json").is_file() and not (
        folder / "generator.json"
    ).is_file():
        return folder / "export"
    if not folder.exists():
        raise FileNotFoundError(
            f"{path}: no such folder; give an export folder or a run directory with export/"
        )
    return folder


def parse_tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key.strip()] = value
    return tags


def main(args: argparse.Namespace) -> int:
    tracking_uri = tracking_uri_from_args(args)
    from deploy.registry import register_export

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if args.export and args.export_option and args.export != args.export_option:
        raise ValueError(
            f"export: given twice ({args.export} and --export {args.export_option}); give one"
        )
    info = register_export(
        export_folder(args.export or args.export_option),
        model_name=args.name,
        alias=args.alias,
        tracking_uri=tracking_uri,
        run_id=args.run_id,
        tags=parse_tags(args.tag),
        promote_if_better=args.promote_if_better,
        experiment=args.experiment,
    )
    print(f"registered {info.uri} (run {info.run_id}) in {tracking_uri}")
    if args.alias:
        if info.promoted:
            print(
                f"alias {args.alias!r} -> version {info.version}: load it with models:/{info.name}@{args.alias}"
            )
        else:
            print(
                f"alias {args.alias!r} not moved: version {info.version} does not beat the current holder "
                f"on {args.promote_if_better!r}"
            )
    return 0
