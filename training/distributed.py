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
        if not grads:
            return
        if self.world_size > 1:
            flat = torch.cat([g.flatten() for g in grads])
            torch_dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        for g in grads:
            # as NVlabs: one bad sample must not poison the weights
            torch.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5, out=g)

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


@contextlib.contextmanager
def main_process_first(dist: Distributed) -> Iterator[None]:
    with dist.accelerator.main_process_first():
        yield


# ----------------------------------------------------------------------------------------------
# Optimizer steps: one "updater" per network, so the trainer reads the same for both backends.


class Updater:
    """Default backend: local gradient accumulation, one averaged all-reduce, Adam step
    (fp16: a grad scaler per network). Equivalent to DDP, and exact across world sizes."""

    sharded = False

    def __init__(
        self, dist: Distributed, module: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        self.dist, self.module, self.optimizer = dist, module, optimizer
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=dist.mixed_precision == "fp16")

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def begin(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, accum: int) -> None:
        self.scaler.scale(loss / accum).backward()

    def finish(self) -> None:
        self.scaler.unscale_(self.optimizer)
        self.dist.average_gradients(self.module.parameters())
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def reset_state(self) -> None:
        """Forget Adam's moments (a fresh optimizer with the same hyper-parameters)."""
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

    def finish(self) -> None:
        pass

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
