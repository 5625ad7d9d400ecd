"""Export a generator to ONNX or TorchScript and check it against PyTorch.

The exported graph is mapping + synthesis + truncation + uint8 conversion:
(z [N, z_dim], c [N, c_dim] for conditional models, psi []) -> uint8 images [N, H, W, C].
Latents for seed s are np.random.RandomState(s).randn(z_dim) as float32, as everywhere else.

  ganforge export --model models:/digits-gan@champion --format onnx --out generator.onnx
  ganforge export --model work/runs/digits/export --format torchscript --out generator.pt

After writing, the file is run (onnxruntime / torch.jit) on a few seeds and compared with the
PyTorch generator; the command fails if any pixel differs by more than --tolerance levels.
ONNX graphs have a fixed batch (--batch); feed larger batches in chunks.
"""

from __future__ import annotations

import argparse

from .common import add_model_argument, add_tracking_arguments, tracking_uri_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument(
        "--format",
        "-f",
        choices=["onnx", "torchscript"],
        default="onnx",
        help="output format (default: %(default)s)",
    )
    parser.add_argument(
        "--out", "-o", default=None, help="output file (default: generator.onnx / generator.pt)"
    )
    parser.add_argument(
        "--psi",
        type=float,
        default=1.0,
        help="default truncation (baked in for families without a psi input; default: %(default)s)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="fixed batch size of the ONNX graph (default: %(default)s)",
    )
    parser.add_argument(
        "--tolerance",
        type=int,
        default=2,
        help="max per-pixel difference from PyTorch, in uint8 levels (default: %(default)s)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
    parser.add_argument(
        "--direction",
        default="a2b",
        help="translators (CycleGAN): the direction to export, a2b or b2a (default: %(default)s)",
    )
    add_tracking_arguments(parser)


def main(args: argparse.Namespace) -> int:
    tracking_uri = tracking_uri_from_args(args)
    from deploy.export import export_generator, verify_export
    from deploy.generator import load_generator
    from deploy.resolve import resolve_export
    from training.networks.export import export_kind

    if export_kind(resolve_export(args.model, tracking_uri)) == "translator":
        from .translate import export_translator_command  # uint8 images in, uint8 images out

        return export_translator_command(args, tracking_uri)
    generator = load_generator(args.model, tracking_uri=tracking_uri)
    out = args.out or ("generator.onnx" if args.format == "onnx" else "generator.pt")
    path = export_generator(generator, out, args.format, psi=args.psi, batch=args.batch)
    print(f"wrote {path} ({args.format})")
    if not args.no_verify:
        stats = verify_export(generator, path, psi=args.psi, tolerance=args.tolerance)
        print(
            f"matches PyTorch on seeds 0-3: max diff {stats['max_abs_diff']:.0f} levels, "
            f"mean {stats['mean_abs_diff']:.4f}"
        )
    return 0
