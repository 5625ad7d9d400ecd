"""Everything a run writes for people, from rank 0 only: the run's one place for side effects.

- ``config.yaml`` (the resolved config), written at start;
- the tick line on stdout and one row per tick in ``metrics.jsonl`` (plus one row per
  evaluation); on resume, rows written after the checkpoint being resumed are dropped first, so
  a tick appears once however often the run was interrupted;
- sample grids under ``samples/`` and ``curves.png`` at the end;
- MLflow tracking through :class:`~training.tracking.Tracker` (params and tags at start,
  metrics every tick, artifacts, the final status).

On other ranks every method is a no-op (``say`` included), so the trainer calls them freely.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import latest_checkpoint
from .images import grid_array, save_curves, save_png, to_uint8
from .networks.export import atomic_write
from .tracking import Tracker


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class RunLog:
    """Rank-0 outputs of one training run (see the module docstring)."""

    def __init__(self, cfg: Any, *, is_main: bool, config_yaml: str) -> None:
        self.cfg, self.is_main, self.config_yaml = cfg, is_main, config_yaml
        self.run_dir = Path(cfg.run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.history: list[dict] = []
        self.tracker: Tracker | None = None

    def say(self, text: str) -> None:
        if self.is_main:
            print(text, flush=True)

    def warn(self, text: str) -> None:
        if self.is_main:
            print(f"ganforge: warning: {text}", file=sys.stderr, flush=True)

    # -- start ---------------------------------------------------------------------------------
    def start(
        self, *, resumed_images: int | None, mlflow_run_id: str | None, tags: dict[str, Any]
    ) -> str | None:
        """Write config.yaml, trim metrics.jsonl to the resumed position, start tracking.
        -> the MLflow run id (None without tracking)."""
        if not self.is_main:
            return mlflow_run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(self.config_yaml)
        )
        self._trim_metrics(resumed_images)
        return self._start_tracking(resumed_images is not None, mlflow_run_id, tags)

    def _trim_metrics(self, resumed_images: int | None) -> None:
        if not self.metrics_path.is_file():
            return
        if resumed_images is None:  # a fresh start in a reused run dir
            self.metrics_path.unlink()
            return
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if round(float(row.get("kimg", 0.0)) * 1000) <= resumed_images:
                rows.append(row)
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.metrics_path, lambda tmp: Path(tmp).write_text(text))
        self.history = [r for r in rows if "tick" in r]

    def _start_tracking(self, resumed: bool, run_id: str | None, tags: dict) -> str | None:
        tr = self.cfg.tracking
        if not tr.enabled:
            return run_id
        self.tracker = Tracker(
            tr,
            work_dir=self.cfg.work_dir,
            run_dir=self.run_dir,
            run_name=tr.run_name or self.cfg.name,
            resume_run_id=run_id if resumed else None,
            resuming=resumed,
        )
        manifest = tags.get("ganforge.dataset"), tags.get("ganforge.dataset_sha256")
        self.tracker.log_input(self.cfg.manifest, name=manifest[0], digest=manifest[1])
        if not resumed:
            import yaml

            self.tracker.log_params(flatten(yaml.safe_load(self.config_yaml)))
            self.tracker.log_artifact(self.run_dir / "config.yaml")
        commit = git_commit()
        self.tracker.set_tags(
            {
                "ganforge.git_commit": commit,
                "mlflow.source.git.commit": commit,
                "ganforge.command": shlex.join(sys.argv),
                **tags,
            }
        )
        return self.tracker.run_id

    # -- during training -----------------------------------------------------------------------
    def tick(
        self,
        *,
        tick: int,
        images_seen: int,
        total_images: int,
        values: dict[str, float],
        progress: dict[str, float],
    ) -> None:
        """One tick: the progress line, a metrics.jsonl row, the tracker's metrics."""
        if not self.is_main:
            return
        eta = (total_images - images_seen) / 1000 * values["timing/sec_per_kimg"]
        parts = [
            f"tick {tick:<4d}",
            f"kimg {images_seen / 1000:8.1f}/{total_images / 1000:g}",
            f"s/kimg {values['timing/sec_per_kimg']:6.2f}",
            f"img/s {values['timing/images_per_sec']:7.1f}",
            f"eta {fmt_eta(eta)}",
            f"mem {values['resources/peak_memory_gb']:.2f}GB",
            f"p {values['augment/p']:.3f}",
        ]
        parts += [
            f"{k} {v:g}" if k == "resolution" else f"{k} {v:.2f}" for k, v in progress.items()
        ]
        parts += [f"{k.split('/')[-1]} {v:.3f}" for k, v in values.items() if k.startswith("loss/")]
        print("  ".join(parts), flush=True)
        row = {"kimg": images_seen / 1000, "tick": tick, **values}
        self.history.append(row)
        self._append(row)
        if self.tracker:
            self.tracker.log_metrics(values, step=images_seen)

    def eval_metrics(self, metrics: dict[str, float], images_seen: int) -> None:
        if not self.is_main:
            return
        self.say("eval  " + "  ".join(f"{k.split('/', 1)[-1]} {v:.4f}" for k, v in metrics.items()))
        self._append({"kimg": images_seen / 1000, **metrics})
        if self.tracker:
            self.tracker.log_metrics(metrics, step=images_seen)

    def _append(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def grid(self, images: torch.Tensor, images_seen: int, upscale_to: int) -> Path | None:
        """Save a sample grid (images [N, C, H, W] in [-1, 1]) and log it as an artifact."""
        if not self.is_main:
            return None
        grid: np.ndarray = grid_array(to_uint8(images), upscale_to=upscale_to)
        path = save_png(grid, self.run_dir / "samples" / f"grid-{images_seen / 1000:09.3f}kimg.png")
        save_png(grid, self.run_dir / "samples" / "latest.png")
        if self.tracker:
            self.tracker.log_artifact(path, "samples")
            self.tracker.log_image(path, "samples", step=images_seen)
        return path

    def checkpoint_saved(self, path: Path | None) -> None:
        if self.is_main and self.tracker and path is not None:
            self.tracker.log_checkpoint(path)

    # -- end -----------------------------------------------------------------------------------
    def finish(self, status: str, export_dir: Path | None) -> None:
        """Curves, the export as artifacts, and the tracker's final status."""
        if not self.is_main or not self.tracker:
            return
        curves = save_curves(
            self.history, ["loss/g", "loss/d", "augment/p"], self.run_dir / "curves.png"
        )
        if curves:
            self.tracker.log_artifact(curves)
        if export_dir:
            self.tracker.log_artifacts(export_dir, "export")
        self.tracker.close({"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))

    def diverged(self, images_seen: int, checkpoint_root: Path, bad_steps: int) -> Path | None:
        kept = latest_checkpoint(checkpoint_root)
        self.say(
            f"ganforge: error: {bad_steps} consecutive steps with a non-finite loss at "
            f"{images_seen / 1000:.1f} kimg; stopped. Last good checkpoint: {kept or 'none'}. "
            f"Lower the learning rate or raise loss.r1_gamma, then resume."
        )
        return kept


__all__ = ["RunLog", "fmt_eta", "git_commit"]
