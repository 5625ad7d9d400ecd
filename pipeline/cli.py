"""``ganforge``: the command line, a thin layer over each stage's Python entry point.

Each subcommand lives in ``pipeline/commands/<name>.py`` with ``add_arguments(parser)`` and
``main(args) -> int``. User mistakes (bad config keys/values, missing files, malformed
manifests or exports, an unreachable tracking server) are printed as one line naming the
culprit; set GANFORGE_DEBUG=1 for the traceback.

Exit codes: 0 success; 2 user error; 3 training diverged (non-finite loss); 75 training
interrupted by SIGTERM/SIGINT after saving a checkpoint (EX_TEMPFAIL: run the same command again
to resume; SLURM requeues on it); 130 Ctrl-C outside training. docs/failure-modes.md lists what
ganforge does on each fault and what to do next.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Order is the order of --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "pipeline.commands.run",
        "end to end on the built-in data: prep -> train -> register -> generate",
    ),
    "prep": ("pipeline.commands.prep", "shard an image collection into WebDataset tars + manifest"),
    "train": (
        "pipeline.commands.train",
        "train a GAN (single process, or under `accelerate launch`)",
    ),
    "eval": (
        "pipeline.commands.eval",
        "FID/KID/precision-recall and class coverage of a generator",
    ),
    "register": (
        "pipeline.commands.register",
        "register an exported generator in the MLflow Model Registry",
    ),
    "generate": (
        "pipeline.commands.generate",
        "generate images/grids/interpolations from a generator",
    ),
    "serve": ("pipeline.commands.serve", "serve a generator over HTTP (POST /generate)"),
    "export": ("pipeline.commands.export", "export a generator to ONNX or TorchScript"),
    "tracking": (
        "pipeline.commands.tracking",
        "send a run's pending MLflow records (tracking sync)",
    ),
    "translate": (
        "pipeline.commands.translate",
        "translate images with a translator (CycleGAN): files/folders -> PNGs",
    ),
    "project": ("pipeline.commands.project", "find the latent of an image (GAN inversion)"),
    "inpaint": ("pipeline.commands.inpaint", "fill a masked region of an image"),
    "upscale": ("pipeline.commands.upscale", "super-resolve an image (PULSE-style)"),
    "synth": ("pipeline.commands.synth", "write generated images as a labelled dataset"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganforge",
        description="Distributed GAN training pipeline: WebDataset prep, StyleGAN2/ProGAN on "
        "Accelerate (DDP or DeepSpeed), MLflow tracking and registry, deployment.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def _is_user_error(exc: BaseException) -> bool:
    # Config/manifest/export/data errors subclass ValueError and carry a message that names the
    # key, file or value; missing files are user errors too.
    return isinstance(
        exc,
        (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from training.tracking import fail_fast_defaults

    fail_fast_defaults()  # an unreachable tracking server: an error in seconds, not minutes
    try:
        code = int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place user errors become messages
        if os.environ.get("GANFORGE_DEBUG") or not _is_user_error(exc):
            raise
        print(f"ganforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under a multi-process launch everything is written and the process group destroyed by
        # now; skip interpreter teardown, where gloo's C++ destructors can still abort a rank
        # ("terminate called without an active exception", seen 1 run in ~20 on CPU) and turn a
        # finished run into a failed launch.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
