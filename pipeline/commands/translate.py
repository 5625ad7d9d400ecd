"""Translate images with a translator (CycleGAN) from the registry or an export folder.

  ganforge translate --model models:/ganforge-cyclegan-demo@champion --direction a2b photo.jpg --out out/
  ganforge translate --model work/runs/cyclegan-demo/export --direction b2a folder/ --out out/ --size native

Inputs are image files or folders (recursively; outputs keep the sub-folders, as PNG). Sizes
(--size): auto (default) translates at the image's own size when both sides are multiples of 4
(the generators are fully convolutional), else as native; own always keeps the image's size
(sides are reflect-padded to a multiple of 4 and cropped back); native resizes the shorter side
to the model's resolution and centre-crops a square (as `ganforge prep`). Unreadable images are
skipped and listed.
"""

from __future__ import annotations

import argparse
import sys

from .common import add_model_argument, add_tracking_arguments, tracking_uri_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument(
        "--direction",
        "-d",
        default="a2b",
        help="a2b (domain A -> B, default) or b2a",
    )
    parser.add_argument("--out", "-o", required=True, help="output folder (PNG files)")
    parser.add_argument(
        "--size",
        default="auto",
        choices=["auto", "own", "native"],
        help="auto: own size if a multiple of 4, else native (default); own; native: the "
        "model's resolution (resize + centre crop)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_tracking_arguments(parser)


def main(args: argparse.Namespace) -> int:
    tracking_uri = tracking_uri_from_args(args)
    from deploy.translate import load_translator, translate_files

    translator = load_translator(args.model, device=args.device, tracking_uri=tracking_uri)
    translator.check_direction(args.direction)

    def progress(items):
        if args.no_progress:
            return items
        from tqdm import tqdm

        return tqdm(items, desc=f"translate {args.direction}", unit="img", file=sys.stderr)

    report = translate_files(
        translator,
        args.inputs,
        args.out,
        direction=args.direction,
        size=args.size,
        progress=progress,
    )
    for path, reason in report.skipped:
        print(f"ganforge translate: skipped {path}: {reason}", file=sys.stderr)
    print(
        f"wrote {len(report.written)} images to {args.out}/"
        + (f" ({len(report.skipped)} skipped)" if report.skipped else "")
    )
    return 0 if report.written else 1


def serve_translator(args: argparse.Namespace, config, tracking_uri: str) -> int:
    """``ganforge serve`` for a translator: POST /translate (see deploy/translate_serve.py)."""
    import dataclasses

    from deploy.translate import load_translator
    from deploy.translate_serve import DEFAULT_BODY_BYTES, TranslatorServer

    from .serve import serve_until_stopped

    if args.max_body_bytes == 64 * 1024:  # the generators' default: too small for images
        config = dataclasses.replace(config, max_body_bytes=DEFAULT_BODY_BYTES)
    translator = load_translator(args.model, device=args.device, tracking_uri=tracking_uri)
    server = TranslatorServer(translator, model_uri=args.model, config=config)
    return serve_until_stopped(server, translator, "POST /translate")


def export_translator_command(args: argparse.Namespace, tracking_uri: str) -> int:
    """``ganforge export`` for a translator: one direction, uint8 [N, H, W, C] in and out."""
    from deploy.translate import load_translator
    from deploy.translator_export import export_translator, verify_translator_export

    translator = load_translator(args.model, tracking_uri=tracking_uri)
    translator.check_direction(args.direction)
    suffix = "onnx" if args.format == "onnx" else "pt"
    out = args.out or f"translator-{args.direction}.{suffix}"
    path = export_translator(translator, out, args.format, args.direction, batch=args.batch)
    shape = (
        f"[{args.batch}, {translator.resolution}, {translator.resolution}, {translator.channels}]"
        if args.format == "onnx"
        else "[N, H, W, C] (H, W multiples of 4)"
    )
    print(f"wrote {path} ({args.format}, {args.direction}: uint8 {shape} -> uint8)")
    if not args.no_verify:
        stats = verify_translator_export(translator, path, args.direction, tolerance=args.tolerance)
        print(
            f"matches PyTorch on 2 images: max diff {stats['max_abs_diff']:.0f} levels, "
            f"mean {stats['mean_abs_diff']:.4f}"
        )
    return 0
