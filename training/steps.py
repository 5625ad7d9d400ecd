"""One training step of any family: phases over micro-batches, entirely on the device.

For each due phase (see :class:`~training.family.Phase`): switch ``requires_grad`` to the trained
network, reseed torch's RNG per micro-batch from ``(seed, step, phase, global micro-batch
index)``, call the phase's loss, backpropagate ``loss / accumulation``, then let the updater
average gradients and step (skipping the update on the device when any rank saw a non-finite
loss). Statistics (metrics, the bad-step streak) accumulate in device tensors and are read once
per tick by :meth:`StepRunner.collect`; nothing in a step waits for the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .data import stable_seed
from .distributed import Distributed, Updater
from .family import Batch, Family, Network, Phase, ReduceContext, StepContext


class CompiledView:
    """A network as compiled phases see it: the submodules named in ``Network.compile`` run
    through ``torch.compile``; everything else (attributes, other submodules) is the plain
    module's, so phase code is the same compiled or not."""

    def __init__(self, module: nn.Module, targets: tuple[str, ...]) -> None:
        self._module = module
        self._compiled = {name: torch.compile(module.get_submodule(name)) for name in targets}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._compiled.get("", self._module)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        compiled = self.__dict__["_compiled"]
        return compiled[name] if name in compiled else getattr(self.__dict__["_module"], name)


def compiled_nets(nets: Mapping[str, nn.Module], specs: Mapping[str, Network]) -> dict[str, Any]:
    """``{name: CompiledView or plain module}`` for compiled phases."""
    import torch._inductor.config as inductor_config

    # random ops (noise inputs, dropout) inside compiled graphs draw exactly as in eager mode,
    # so a compiled run reproduces an eager one from the same seed
    inductor_config.fallback_random = True
    out: dict[str, Any] = dict(nets)
    for name, spec in specs.items():
        if spec.optimizer is not None and spec.compile:
            out[name] = CompiledView(nets[name], spec.compile)
    return out


class StepRunner:
    """Runs the family's phases for one step; owns the per-tick device statistics."""

    def __init__(
        self,
        *,
        family: Family,
        cfg: Any,
        dist: Distributed,
        nets: dict[str, nn.Module],
        specs: dict[str, Network],
        updaters: dict[str, Updater],
        augment: Callable[[torch.Tensor], torch.Tensor],
        report_real_logits: Callable[[torch.Tensor], None],
        precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.family, self.cfg, self.dist = family, cfg, dist
        self.nets, self.specs, self.updaters = nets, specs, updaters
        self.augment, self.report_real_logits, self.precision = (
            augment,
            report_real_logits,
            precision,
        )
        self.phases = family.phases()
        for phase in self.phases:
            if phase.trains not in updaters:
                raise ValueError(
                    f"{family.name}: phase {phase.name!r} trains {phase.trains!r}, which is not a "
                    f"trained network (trained: {', '.join(updaters)})"
                )
        self.compiled = compiled_nets(nets, specs) if cfg.train.compile else dict(nets)
        device = dist.device
        self.class_ids = torch.arange(family.c_dim, device=device) if family.c_dim else None
        self.reset_tick()

    # -- per-tick device statistics ------------------------------------------------------------
    def reset_tick(self) -> None:
        device = self.dist.device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.streak = getattr(self, "streak", torch.zeros([], device=device))
        self.max_streak = self.streak.clone()
        self.steps_in_tick = 0

    def _add(self, metrics: Mapping[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            v = value.detach().float().reshape([])
            self.sums[key] = self.sums[key] + v if key in self.sums else v
            self.counts[key] = self.counts.get(key, 0) + 1

    def collect(self, stop_requested: bool) -> tuple[dict[str, float], int, int, bool]:
        """Once per tick, the one host sync: metrics averaged over the tick's steps and ranks,
        the longest streak of bad steps in the tick, the streak at its end, and whether any rank
        wants to stop (a signal). -> (metrics, longest streak, current streak, stop)."""
        keys = sorted(self.sums)
        flat = torch.stack(
            [self.sums[k] / max(self.counts[k], 1) for k in keys]
            + [
                self.max_streak.float(),
                self.streak.float(),
                torch.full([], float(stop_requested), device=self.dist.device),
            ]
        )
        flat = self.dist.sum(flat).tolist()
        world = self.dist.world_size
        metrics = {k: v / world for k, v in zip(keys, flat)}
        return metrics, round(flat[-3] / world), round(flat[-2] / world), flat[-1] > 0

    # -- one step ------------------------------------------------------------------------------
    def run(
        self,
        batches: list[list[Mapping[str, Batch]]],
        *,
        step: int,
        images_seen: int,
    ) -> None:
        """``batches[r][m]``: critic round r, this rank's micro-batch m (``{stream: Batch}``)."""
        rounds, accum = len(batches), len(batches[0])
        step_ok = torch.ones([], dtype=torch.bool, device=self.dist.device)
        i = 0
        while i < len(self.phases):
            block = [self.phases[i]]
            if block[0].critic:
                while i + len(block) < len(self.phases) and self.phases[i + len(block)].critic:
                    block.append(self.phases[i + len(block)])
            for r in range(rounds if block[0].critic else 1):
                for phase in block:
                    if step % phase.interval == 0:
                        ok = self._phase(phase, batches[r], r, step, images_seen, accum)
                        step_ok = step_ok & ok
            i += len(block)
        with torch.no_grad():
            self.family.end_step(
                ReduceContext(
                    nets=self.nets,
                    step=step,
                    images_seen=images_seen,
                    device=self.dist.device,
                    all_sum=self.dist.sum,
                    world_size=self.dist.world_size,
                    rank=self.dist.rank,
                )
            )
        self.streak = torch.where(step_ok, torch.zeros_like(self.streak), self.streak + 1)
        self.max_streak = torch.maximum(self.max_streak, self.streak)
        self.steps_in_tick += 1

    def _phase(
        self,
        phase: Phase,
        micro_batches: list[Mapping[str, Batch]],
        critic_round: int,
        step: int,
        images_seen: int,
        accum: int,
    ) -> torch.Tensor:
        updater = self.updaters[phase.trains]
        for name in self.updaters:
            self.nets[name].requires_grad_(name == phase.trains)
        nets = self.compiled if phase.compiled else self.nets
        seed_name = phase.name if critic_round == 0 else f"{phase.name}@{critic_round}"
        micro_total = accum * self.dist.world_size
        updater.begin()
        bad = torch.zeros([], dtype=torch.bool, device=self.dist.device)
        for m, batch in enumerate(micro_batches):
            micro_global = self.dist.rank * accum + m
            torch.manual_seed(
                stable_seed(self.cfg.train.seed, step, seed_name, micro_global) % 2**63
            )
            ctx = StepContext(
                nets=nets,
                eager_nets=self.nets,
                batch=batch,
                cfg=self.cfg,
                step=step,
                images_seen=images_seen,
                critic_round=critic_round,
                micro_batches=micro_total,
                device=self.dist.device,
                c_dim=self.family.c_dim,
                augment=self.augment,
                report_real_logits=self.report_real_logits,
                class_ids=self.class_ids,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                micro_index=m,
            )
            with self.precision():
                loss, metrics = phase.loss(ctx)
            updater.backward(loss, accum)
            bad = bad | ~torch.isfinite(loss.detach()).all()
            self._add(metrics)
        ok = updater.finish(bad)
        self.nets[phase.trains].requires_grad_(False)
        if phase.after_update is not None:
            with torch.no_grad():
                phase.after_update(self.nets)
        return ok


__all__ = ["CompiledView", "StepRunner", "compiled_nets"]
