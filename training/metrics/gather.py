"""Collectives for evaluation, expressed with one caller-supplied ``gather`` (no Accelerate here).

``gather(tensor) -> tensor`` must concatenate equally-shaped tensors from every rank along dim 0
in rank order, on every rank (``accelerator.gather`` or ``torch.distributed.all_gather`` + cat);
with one process it is the identity. Every rank must make the same calls in the same order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Gather = Callable[[torch.Tensor], torch.Tensor]


def identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def resolve_gather(gather: Gather | None, world_size: int) -> Gather:
    if gather is None:
        if world_size > 1:
            raise ValueError(
                f"gather: a collective is required when world_size={world_size} > 1 "
                f"(e.g. accelerator.gather)"
            )
        return identity
    return gather


def gather_padded(tensor: torch.Tensor, gather: Gather, world_size: int) -> torch.Tensor:
    """Concatenate tensors with different first dimensions from all ranks, in rank order.

    Ranks read different numbers of real images (shards are uneven) and generate slices that
    differ by one, so each rank pads to the largest count, and the padding is dropped after.
    """
    if world_size == 1:
        return tensor
    counts = gather(
        torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    ).tolist()
    longest = max(counts)
    padded = torch.cat([tensor, tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))])
    everything = gather(padded.contiguous())
    return torch.cat([everything[r * longest : r * longest + n] for r, n in enumerate(counts)])


def broadcast_from_main(
    tensor: torch.Tensor, gather: Gather, rank: int, world_size: int
) -> torch.Tensor:
    """Rank 0's ``tensor`` on every rank (an all-gather in which the other ranks send zeros)."""
    if world_size == 1:
        return tensor
    sent = tensor if rank == 0 else torch.zeros_like(tensor)
    return gather(sent.contiguous())[: tensor.shape[0]]
