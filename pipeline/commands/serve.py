"""Serve a generator over HTTP (FastAPI + uvicorn): POST /generate, GET /info, /health, /ready,
/metrics, OpenAPI docs at /docs.

  ganforge serve --model models:/digits-gan@champion --port 8080
  curl -s localhost:8080/generate -H 'Content-Type: application/json' \
       -d '{"seeds": [0, 1, 2, 3], "psi": 0.7}' -o grid.png
  curl -s localhost:8080/generate -H 'Content-Type: application/json' \
       -d '{"seeds": "0-7", "format": "base64"}'

Request keys: seeds (list, int or "A-B"), psi (default 1.0), labels (conditional models: one id
or name, or one per seed), noise_mode (const|random|none), format (png: one image or a grid;
base64: JSON with one base64 PNG per seed). Bad requests get a 4xx with {"error": ...}; a full
server answers 503 with Retry-After. Concurrent requests are batched into one forward pass
without changing a pixel. SIGTERM drains: in-flight requests finish, then exit 0. Binds
127.0.0.1 unless --host says otherwise (there is no authentication: put a proxy in front before
exposing it). The MLflow alternative: `mlflow models serve -m models:/NAME@ALIAS --env-manager
local` (it runs the model's Python code: see docs/deploy.md).
"""

from __future__ import annotations

import argparse

from .common import add_model_argument, add_tracking_arguments, tracking_uri_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port (default: %(default)s; 0: any free port)"
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=64,
        help="images per request at most (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="images per forward pass when batching concurrent requests (default: %(default)s)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-concurrency",
        type=int,
        default=8,
        help="requests at work at once (default: %(default)s)",
    )
    limits.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests waiting for a slot; more get 503 + Retry-After (default: %(default)s)",
    )
    limits.add_argument(
        "--max-body-bytes",
        type=int,
        default=64 * 1024,
        help="request body limit (default: %(default)s)",
    )
    limits.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        help="seconds a request may take to arrive; slower clients are dropped (default: %(default)s)",
    )
    limits.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight requests get to finish after SIGTERM (default: %(default)s)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    add_tracking_arguments(parser)


def main(args: argparse.Namespace) -> int:
    tracking_uri = tracking_uri_from_args(args)
    from deploy.generator import load_generator
    from deploy.serve import GeneratorServer, extra_routers
    from deploy.service import ServeConfig

    config = ServeConfig(
        host=args.host,
        port=args.port,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        read_timeout_s=args.read_timeout,
        drain_timeout_s=args.drain_timeout,
    )
    if args.max_images < 1 or args.max_batch < 1:
        raise ValueError("--max-images and --max-batch must be >= 1")
    from deploy.resolve import resolve_export
    from training.networks.export import export_kind

    if export_kind(resolve_export(args.model, tracking_uri)) == "translator":
        from .translate import serve_translator  # POST /translate instead of /generate

        return serve_translator(args, config, tracking_uri)
    generator = load_generator(args.model, device=args.device, tracking_uri=tracking_uri)
    server = GeneratorServer(
        generator,
        max_images=args.max_images,
        max_batch=args.max_batch,
        model_uri=args.model,
        config=config,
        routers=tuple(extra_routers(generator, config)),
    )
    return serve_until_stopped(server, generator, "POST /generate /inpaint /upscale")


def serve_until_stopped(server, model: object, posts: str) -> int:
    """Say what is served where, serve until Ctrl-C or SIGTERM (which drain first); -> 0."""
    print(
        f"serving {model} on {server.url} ({posts}, GET /info /health /ready /metrics, docs at "
        f"/docs); Ctrl-C or SIGTERM drains and stops",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
