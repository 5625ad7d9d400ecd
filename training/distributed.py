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

    def __init__(self, *, cpu: bool = False, mixed_precision: str = "no", timeout_s: int = 1800) -> None:
        # Without a GPU, Accelerate must be told to run on the CPU or a multi-process launch
        # silently gives N independent rank-0 processes; gloo is the CPU backend.
        cpu = cpu or not torch.cuda.is_available()
        env_world = int(os.environ.get("WORLD_SIZE", "1"))
        kwargs = []
        if env_world > 1:
            kwargs.append(InitProcessGroupKwargs(backend="gloo" if cpu else "nccl",
                                                 timeout=timedelta(seconds=timeout_s)))
        # Autocast only: GAN losses and regularisers run in float32 (see trainer), and the
        # fp16 grad scaling is done per optimizer by the trainer.
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision, kwargs_handlers=kwargs)
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
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
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
