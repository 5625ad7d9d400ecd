"""What a checkpoint holds, and how the trainer's parts save and restore themselves.

:class:`TrainState` is the trainer's own counters (``state.json``). Everything else saves
itself: every network (``models.safetensors``, by its family name), each updater (its optimizer
and loss scaler in ``optim.pt``, or its partition under ``deepspeed/`` for a sharded backend),
the family's state tensors (``extra.<key>``), and the ADA controller, the single owner of the
augmentation probability p (plain values in ``state.json["ada"]``, tensors as ``extra.ada.<key>``).
The files are written by ``training/checkpoint.py`` (atomic folder rename).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import checkpoint_name, load_checkpoint, prune_checkpoints, save_checkpoint
from .distributed import Distributed, Updater
from .family import Family


@dataclass(kw_only=True)
class TrainState:
    """The trainer's counters: everything else derives from them (growth, schedules, seeds)."""

    images_seen: int = 0
    """Real images shown to D so far (all ranks, all critic rounds)."""
    step: int = 0
    """Training steps (G steps) completed."""
    tick: int = 0
    """Index of the next tick line."""
    mlflow_run_id: str | None = None
    """The MLflow run this training logs to (resumes continue it)."""
    best_metric: float | None = None
    """Best value of ``eval.keep_best`` so far."""
    world_size: int = 1
    """Processes the checkpoint was saved with (informational: any world size resumes)."""
    family: str = ""
    """Family name (``model.family``)."""
    phase: dict[str, float] = field(default_factory=dict)
    """The family's position (``Family.progress``), e.g. ProGAN's resolution and alpha."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainState:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in names}
        values["phase"] = values.get("phase") or {}
        return cls(**values)


def _split_ada(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    plain, tensors = {}, {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[f"ada.{key}"] = value.detach().reshape(-1)
            plain.setdefault("__tensor_shapes__", {})[key] = list(value.shape)
        else:
            plain[key] = value
    return plain, tensors


def _join_ada(plain: Mapping[str, Any], extra: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    state = {k: v for k, v in plain.items() if k != "__tensor_shapes__"}
    for key, shape in plain.get("__tensor_shapes__", {}).items():
        state[key] = extra[f"ada.{key}"].reshape(shape)
    return state


def save_training(
    root: Path,
    *,
    state: TrainState,
    dist: Distributed,
    nets: Mapping[str, torch.nn.Module],
    updaters: Mapping[str, Updater],
    family: Family,
    ada: Any | None,
    config_yaml: str | None,
    keep: int,
) -> Path | None:
    """Collective: save a checkpoint under ``root`` (rank 0 writes; sharded updaters first write
    their partitions on every rank) -> its folder on rank 0, None elsewhere."""
    root = Path(root)
    staging = root / f".staging-{checkpoint_name(state.images_seen)}"
    sharded = any(u.sharded for u in updaters.values())
    if sharded:
        if dist.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        dist.barrier()
        for name, updater in updaters.items():
            updater.save_sharded(str(staging / "deepspeed"), name)
        dist.barrier()
    # ADA statistics pending since the last p update: every rank's share, summed (a collective)
    pending = dist.sum(ada.pending()) if ada is not None else None
    path = None
    if dist.is_main:
        meta = state.to_json()
        extra = {k: v.reshape(-1) for k, v in family.state_dict().items()}
        if ada is not None:
            ada_state = ada.state_dict()
            if "pending_sum" in ada_state:
                total, count = pending.tolist()
                ada_state.update(pending_sum=total, pending_count=count)
            meta["ada"], ada_tensors = _split_ada(ada_state)
            extra.update(ada_tensors)
        meta.pop("images_seen")
        path = save_checkpoint(
            root,
            images_seen=state.images_seen,
            modules=dict(nets),
            optimizers={name: u.state_dict() for name, u in updaters.items()},
            state=meta,
            extra_tensors=extra,
            config_yaml=config_yaml,
            staging=staging if sharded else None,
        )
        prune_checkpoints(root, keep)
    dist.barrier()
    return path


def load_training(
    path: Path,
    *,
    dist: Distributed,
    nets: Mapping[str, torch.nn.Module],
    updaters: Mapping[str, Updater],
    family: Family,
    ada: Any | None,
) -> tuple[TrainState, str]:
    """Restore everything from checkpoint ``path`` -> (TrainState, a note for the log line)."""
    meta, extra, optim = load_checkpoint(path, modules=dict(nets), with_optimizers=True)
    state = TrainState.from_json(meta)
    family.load_state_dict({k: v for k, v in extra.items() if not k.startswith("ada.")})
    if ada is not None and meta.get("ada"):
        ada_state = _join_ada(meta["ada"], extra)
        if dist.rank != 0:
            # the statistics pending since the last p update are global sums (all ranks'): the
            # checkpoint holds them once, so only rank 0 takes them back, or a resume on N
            # processes would count them N times
            ada_state = {k: (0.0 if k.startswith("pending") else v) for k, v in ada_state.items()}
        ada.load_state_dict(ada_state)
    note = ""
    sharded_here = any(u.sharded for u in updaters.values())
    sharded_saved = (Path(path) / "deepspeed").is_dir()
    if sharded_here and sharded_saved and state.world_size == dist.world_size:
        for name, updater in updaters.items():
            updater.load_sharded(str(Path(path) / "deepspeed"), name)
    elif sharded_here or sharded_saved:
        # ZeRO partitions the Adam moments by rank: they cannot be re-split for another world
        # size or moved to the other backend; the weights come back exactly, the moments restart.
        note = (
            " (optimizer moments restarted: DeepSpeed partitions need the same world size and "
            "backend)"
        )
    else:
        for name, updater in updaters.items():
            updater.load_state_dict(optim[name])
    return state, note


__all__ = ["TrainState", "load_training", "save_training"]
