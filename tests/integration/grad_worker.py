"""Run under `accelerate launch` by test_gradient_averaging.py: one SGD step of a tiny linear
model through the trainer's updaters, each rank on its own batch; rank 0 saves the result."""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from training.distributed import DeepSpeedUpdater, Distributed, Updater

IN, OUT, BATCH, LR = 4, 3, 8, 0.5


def rank_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(BATCH, IN, generator=g), torch.randn(BATCH, OUT, generator=g)


def initial_model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(IN, OUT)


def loss_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def main(out: str, backend: str) -> None:
    dist = Distributed(cpu=True)
    model = initial_model()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LR
    )  # linear in the gradient: no scale invariance
    if backend == "deepspeed":
        updater = DeepSpeedUpdater(dist, model, optimizer, zero_stage=2, micro_batch=BATCH, accum=1)
    else:
        updater = Updater(dist, model, optimizer)
    x, y = rank_batch(dist.rank)
    updater.begin()
    updater.backward(loss_of(model, x, y), 1)
    grads = {}
    if backend != "deepspeed":
        dist.average_gradients(model.parameters())  # what finish() does, observed directly
        grads = {f"grad.{n}": p.grad.detach().clone() for n, p in model.named_parameters()}
        for p in model.parameters():  # finish() averages again: give it the local gradients back
            p.grad = None
        updater.backward(loss_of(model, x, y), 1)
    updater.finish()
    if dist.is_main:
        weights = {f"weight.{n}": p.detach().clone() for n, p in model.named_parameters()}
        save_file({**weights, **grads}, out)
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
