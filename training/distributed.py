"""Everything that knows about processes: Accelerate setup, gradient averaging, agreement.

Why no ``DistributedDataParallel`` wrapper: a GAN step alternates two networks, freezes one while
the other trains (``requires_grad_(False)``) and takes a double backward for R1 /
path-length regularisation. DDP's reducer supports none of these cleanly (``autograd.grad`` with
``create_graph`` and parameters that get no gradient in a phase). Like NVlabs' StyleGAN2-ADA, we
keep the networks unwrapped, accumulate gradients locally, and average them across ranks with
one flattened all-reduce per optimizer step. The result is the same as DDP's (mean of the
ranks' gradients) and exactly the same as a single process running all micro-batches.

Accelerate owns process-group setup (``accelerate launch``/torchrun, any number of nodes),
device placement, autocast and the main-process helpers. DeepSpeed support lives here too (see
``docs/distributed.md``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import InitProcessGroupKwargs


class Distributed:
    """The trainer's handle on ranks and devices (one per process)."""

    def __init__(
        self, *, cpu: bool = False, mixed_precision: str = "no", timeout_s: int = 1800
    ) -> None:
        # Without a GPU, Accelerate must be told to run on the CPU or a multi-process launch
        # silently gives N independent rank-0 processes; gloo is the CPU backend.
        cpu = cpu or not torch.cuda.is_available()
        env_world = int(os.environ.get("WORLD_SIZE", "1"))
        kwargs = []
        if env_world > 1:
            kwargs.append(
                InitProcessGroupKwargs(
                    backend="gloo" if cpu else "nccl", timeout=timedelta(seconds=timeout_s)
                )
            )
        # Autocast only: GAN losses and regularisers run in float32 (see trainer), and the
        # fp16 grad scaling is done per optimizer by the trainer.
        self.accelerator = Accelerator(
            cpu=cpu, mixed_precision=mixed_precision, kwargs_handlers=kwargs
        )
        self.mixed_precision = mixed_precision
        if env_world != self.world_size:
            raise RuntimeError(
                f"launcher started {env_world} processes but Accelerate sees {self.world_size}: on a "
                f"GPU-less machine launch with `accelerate launch --multi_gpu --num_processes N` "
                f"(the trainer passes cpu=True) or torchrun; see docs/distributed.md"
            )

    # -- facts -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.mixed_precision == "no":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.mixed_precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- collectives -----------------------------------------------------------------------------
    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Mean of each gradient over ranks (one flattened all-reduce); NaN/Inf sanitised."""
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            reduce_flat(self, grads)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            tensor = tensor.clone()
            torch_dist.all_reduce(tensor)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.sum(tensor) / self.world_size

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate equally-shaped tensors from all ranks along dim 0 (rank order)."""
        return self.accelerator.gather(tensor) if self.world_size > 1 else tensor

    def any(self, flag: bool | torch.Tensor) -> bool:
        """True on every rank if it is true on any rank (stop agreement: signals, NaNs)."""
        t = torch.as_tensor(flag, dtype=torch.float32, device=self.device).reshape(1)
        if self.world_size > 1:
            torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def stop_agreement(self) -> StopAgreement:
        """A host-side, never-GPU-syncing agreement on "stop now" (signals); see the class."""
        return StopAgreement(self)

    def broadcast_object(self, obj: object) -> object:
        if self.world_size == 1:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def shutdown(self) -> None:
        # wait_for_everyone before teardown: without it 1 run in 4 aborted at exit (gloo).
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        if self.world_size == 1:
            # let a later run in the same process (tests, notebooks) choose other settings
            AcceleratorState._reset_state(reset_partial_state=True)


class StopAgreement:
    """Agree on stopping (a signal on any rank) without ever waiting for the GPU.

    Every step each rank posts its flag in an asynchronous all-reduce over a CPU (gloo) group
    and reads the result of the previous step's post, so all ranks learn "someone wants to stop"
    at the same step, one step late, and only host threads take part. Single process: the
    local flag itself.
    """

    def __init__(self, dist: Distributed) -> None:
        self.world_size = dist.world_size
        self._group = torch_dist.new_group(backend="gloo") if self.world_size > 1 else None
        self._buf = torch.zeros(1)
        self._work = None

    def poll(self, local_stop: bool) -> bool:
        if self._group is None:
            return local_stop
        agreed = False
        if self._work is not None:
            self._work.wait()
            agreed = self._buf.numpy()[0] > 0  # a CPU tensor: a host read, not a device sync
        self._buf.fill_(1.0 if local_stop else 0.0)
        self._work = torch_dist.all_reduce(self._buf, group=self._group, async_op=True)
        return bool(agreed)

    def close(self) -> None:
        if self._work is not None:
            self._work.wait()
            self._work = None


@contextlib.contextmanager
def main_process_first(dist: Distributed) -> Iterator[None]:
    with dist.accelerator.main_process_first():
        yield


# ----------------------------------------------------------------------------------------------
# Optimizer steps: one "updater" per network, so the trainer reads the same for both backends.


def reduce_flat(
    dist: Distributed,
    grads: list[torch.Tensor],
    flags: torch.Tensor | None = None,
    scaler: LossScaler | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Average ``grads`` over ranks in place through ONE flattened buffer: all-reduce (when
    world > 1), fp16 unscale + overflow check, and one ``nan_to_num`` (as NVlabs: a bad sample
    must not poison the weights; +-inf -> +-1e5). ``flags`` (a small float tensor, e.g. "this
    rank saw a non-finite loss") rides along in the same all-reduce and comes back summed over
    ranks. -> (summed flags or None, fp16 overflow flag or None). No host sync."""
    parts = [g.reshape(-1).float() for g in grads]
    if flags is not None:
        parts.append(flags.reshape(-1).float())
    flat = torch.cat(parts)
    if dist.world_size > 1:
        torch_dist.all_reduce(flat)
    n_flags = 0 if flags is None else flags.numel()
    body = flat[: flat.numel() - n_flags]
    summed_flags = flat[body.numel() :] if flags is not None else None
    if dist.world_size > 1:
        body /= dist.world_size
    overflow = scaler.unscale_(body) if scaler is not None and scaler.enabled else None
    torch.nan_to_num(body, nan=0.0, posinf=1e5, neginf=-1e5, out=body)
    torch._foreach_copy_(
        grads, [v.view_as(g) for v, g in zip(body.split([g.numel() for g in grads]), grads)]
    )
    return summed_flags, overflow


class LossScaler:
    """Dynamic fp16 loss scale kept on the device (GradScaler's arithmetic without its host
    syncs): scale x2 after ``growth_interval`` clean steps, /2 on overflow; an overflowing
    update is skipped (on the device) by the updater."""

    def __init__(self, device: torch.device, enabled: bool, init_scale: float = 2.0**16) -> None:
        self.enabled = enabled
        self.scale = torch.full([], init_scale if enabled else 1.0, device=device)
        self.growth_tracker = torch.zeros([], dtype=torch.int32, device=device)
        self.growth_interval = 2000

    def unscale_(self, flat: torch.Tensor) -> torch.Tensor:
        found_inf = torch.zeros(1, device=flat.device)
        torch._amp_foreach_non_finite_check_and_unscale_([flat], found_inf, self.scale.reciprocal())
        torch._amp_update_scale_(
            self.scale, self.growth_tracker, found_inf, 2.0, 0.5, self.growth_interval
        )
        return found_inf.reshape([]) > 0

    def state_dict(self) -> dict:
        return {"scale": float(self.scale), "growth_tracker": int(self.growth_tracker)}

    def load_state_dict(self, state: dict) -> None:
        if "scale" in state and self.enabled:
            self.scale.fill_(float(state["scale"]))
            self.growth_tracker.fill_(
                int(state.get("growth_tracker", state.get("_growth_tracker", 0)))
            )


class Updater:
    """Default backend: local gradient accumulation, one flattened all-reduce (the mean over
    ranks: equivalent to DDP, and exact across world sizes), non-finite gradients zeroed, and an
    optimizer step that is *skipped on the device* when any rank saw a non-finite loss (or an
    fp16 overflow): parameters and optimizer state are restored with ``torch.where``, so the
    host never waits for the verdict."""

    sharded = False

    def __init__(
        self, dist: Distributed, module: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        self.dist, self.module, self.optimizer = dist, module, optimizer
        self.scaler = LossScaler(dist.device, enabled=dist.mixed_precision == "fp16")

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def set_lr(self, lr: float) -> None:
        for group in self.param_groups:
            group["lr"] = lr

    def begin(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, accum: int) -> None:
        if self.scaler.enabled:
            loss = loss * self.scaler.scale
        (loss / accum).backward()

    def finish(self, bad_loss: torch.Tensor | None = None) -> torch.Tensor:
        """Average gradients and step. ``bad_loss``: 0-dim bool, this rank saw a non-finite
        loss in this update. -> 0-dim bool on the device: the update was applied on every rank."""
        params = [p for p in self.module.parameters() if p.grad is not None]
        flag = (
            torch.zeros(1, device=self.dist.device)
            if bad_loss is None
            else bad_loss.float().reshape(1)
        )
        if not params:
            return torch.ones([], dtype=torch.bool, device=self.dist.device)
        summed, overflow = reduce_flat(self.dist, [p.grad for p in params], flag, self.scaler)
        ok = summed.reshape([]) == 0
        if overflow is not None:
            ok = ok & ~overflow
        self._masked_step(params, ok)
        return ok

    def _masked_step(self, params: list[torch.nn.Parameter], ok: torch.Tensor) -> None:
        if self.optimizer.defaults.get("fused"):
            # fused Adam skips the whole update on the device when found_inf is set
            self.optimizer.found_inf = (~ok).float().reshape([])
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
            return
        before = [p.detach().clone() for p in params]
        state_before = [
            (t, t.clone())
            for p in params
            for t in self.optimizer.state.get(p, {}).values()
            if isinstance(t, torch.Tensor)
        ]
        known = {id(t) for t, _ in state_before}
        self.optimizer.step()
        with torch.no_grad():
            for p, old in zip(params, before):
                p.copy_(torch.where(ok, p, old))
            for t, old in state_before:
                t.copy_(torch.where(ok, t, old))
            for p in params:  # state created by this (first) step: back to zeros when skipped
                for t in self.optimizer.state.get(p, {}).values():
                    if isinstance(t, torch.Tensor) and id(t) not in known:
                        t.copy_(torch.where(ok, t, torch.zeros_like(t)))

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def save_sharded(self, folder: str, tag: str) -> None:
        """Collective under a sharded backend (every rank writes its partition); no-op here:
        the whole state is in :meth:`state_dict`."""

    def load_sharded(self, folder: str, tag: str) -> None:
        """Counterpart of :meth:`save_sharded` (no-op here)."""

    def reset_state(self) -> None:
        """Forget the optimizer's moments (a fresh optimizer with the same hyper-parameters)."""
        self.optimizer.state.clear()


def deepspeed_config(*, zero_stage: int, micro_batch: int, accum: int) -> dict:
    """The DeepSpeed config ganforge uses (docs/distributed.md explains each choice)."""
    if zero_stage not in (1, 2):
        raise ValueError(
            f"train.zero_stage: ganforge supports ZeRO stage 1 or 2, got {zero_stage}; ZeRO-3 "
            f"partitions parameters, which breaks R1/path-length double backward through "
            f"the unwrapped networks"
        )
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accum,
        "zero_optimization": {
            "stage": zero_stage,
            "overlap_comm": False,
            "contiguous_gradients": True,
        },
        # Mixed precision stays torch.autocast (train.mixed_precision): DeepSpeed's own bf16/fp16
        # modes cast the weights, but the mapping network, w_avg and the regularisers need fp32.
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "gradient_clipping": 0.0,
        "zero_allow_untested_optimizer": True,  # torch.optim.Adam with StyleGAN2's betas/lazy-reg lr
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def _init_deepspeed(dist: Distributed):
    if dist.device.type == "cpu":
        os.environ.setdefault(
            "DS_ACCELERATOR", "cpu"
        )  # no CUDA: DeepSpeed's CPU accelerator + gloo
    import deepspeed

    if not torch_dist.is_initialized():  # single process: DeepSpeed still wants a process group
        for key, value in (
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", str(_free_port())),
        ):
            os.environ.setdefault(key, value)
    deepspeed.init_distributed(
        dist_backend="gloo" if dist.device.type == "cpu" else "nccl", auto_mpi_discovery=False
    )
    return deepspeed


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DeepSpeedUpdater(Updater):
    """DeepSpeed ZeRO-1/2 for one network: ``deepspeed.initialize`` once per model (as its DCGAN
    tutorial), each engine's own ``backward``/``step``. Forward passes (and R1/path-length
    ``autograd.grad``) go through the unwrapped module: under ZeRO-1/2 its parameters are whole,
    and the engine's forward hooks break double backward. The engine averages gradients across
    ranks and scales the loss by its accumulation steps; optimizer state is partitioned."""

    sharded = True

    def __init__(
        self,
        dist: Distributed,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        zero_stage: int,
        micro_batch: int,
        accum: int,
    ) -> None:
        deepspeed = _init_deepspeed(dist)
        self.dist, self.module = dist, module
        config = deepspeed_config(zero_stage=zero_stage, micro_batch=micro_batch, accum=accum)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=module, optimizer=optimizer, config=config, dist_init_required=False
        )
        self.accum = accum
        self.scaler = LossScaler(dist.device, enabled=False)

    def set_accumulation(self, micro_batch: int, accum: int) -> None:
        if accum != self.accum:  # ProGAN: per-resolution batch sizes
            self.engine.set_train_micro_batch_size(micro_batch)
            self.engine.set_train_batch_size(micro_batch * accum * self.dist.world_size)
            self.accum = accum

    def begin(self) -> None:
        pass  # the engine zeroes gradients after each optimizer step

    def backward(self, loss: torch.Tensor, accum: int) -> None:
        self.engine.backward(loss)  # divides by gradient_accumulation_steps itself
        self.engine.step()  # an optimizer update only at the accumulation boundary

    def finish(self, bad_loss: torch.Tensor | None = None) -> torch.Tensor:
        # the engine already stepped in backward(); DeepSpeed applies its own update rules
        return torch.ones([], dtype=torch.bool, device=self.dist.device)

    def state_dict(self) -> dict:
        return {}  # partitioned: saved with save_sharded()

    def load_state_dict(self, state: dict) -> None:
        pass

    def save_sharded(self, folder: str, tag: str) -> None:
        """Collective: every rank writes its optimizer partition (DeepSpeed's checkpoint format)."""
        self.engine.save_checkpoint(folder, tag=tag, save_latest=False)

    def reset_state(self) -> None:
        inner = getattr(self.optimizer, "optimizer", self.optimizer)  # ZeRO wraps torch's Adam
        inner.state.clear()

    def load_sharded(self, folder: str, tag: str) -> None:
        self.engine.load_checkpoint(
            folder,
            tag=tag,
            load_module_strict=True,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
            load_module_only=False,
        )
