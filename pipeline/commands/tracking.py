"""Tracking maintenance: send what a run could not send to MLflow.

  ganforge tracking sync work/runs/digits
  ganforge tracking sync work/runs/digits --tracking-uri http://mlflow.internal:5000

When the tracking server was down or unreachable during training, the run dir keeps every
MLflow call as a structured record in ``tracking-pending.jsonl`` (training itself never waits for
the server). ``sync`` replays them in order to the run's server (from ``mlflow-run.json``, or
--tracking-uri), creating the MLflow run if it never existed; records already in the run are
skipped, so syncing twice, or after a partial sync, is safe. Run it after the training command
has ended. Exit 0 when everything was sent; 2 when the server is unreachable (the records stay).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sync = sub.add_parser(
        "sync",
        help="replay <run_dir>/tracking-pending.jsonl to the tracking server (idempotent)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument("run_dir", help="the training run dir (work/runs/<name>)")
    sync.add_argument(
        "--tracking-uri",
        default=None,
        help="tracking server to send to (default: the one the run used, from mlflow-run.json)",
    )
    sync.add_argument(
        "--force",
        action="store_true",
        help="sync although mlflow-run.json names a training process on this host that may "
        "still run (e.g. one killed with SIGKILL whose pid was reused)",
    )


def main(args: argparse.Namespace) -> int:
    from training.tracking_sync import sync_run_dir

    result = sync_run_dir(args.run_dir, args.tracking_uri, force=args.force)
    for line in result.skipped:
        print(f"  skipped {line}")
    if result.error:
        print(
            f"ganforge tracking: error: sent {result.sent} record(s), then the server failed "
            f"({result.error}); {len(result.remaining)} record(s) stay in "
            f"{args.run_dir}/tracking-pending.jsonl: run this command again",
            file=sys.stderr,
        )
        return 2
    if result.sent == 0 and not result.skipped:
        print(f"nothing to sync: {args.run_dir} has no pending tracking records")
        return 0
    print(
        f"synced {result.sent} record(s) ({len(result.skipped)} skipped) to MLflow run "
        f"{result.run_id}"
    )
    return 0
