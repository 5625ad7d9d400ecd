"""Gradient averaging across two real processes (`accelerate launch`, gloo) is a *mean*.

The 2-vs-1-process training tests use Adam, whose update is invariant to the gradient's scale:
an all-reduce that summed instead of averaging would pass them. Here the trainer's updaters
take one plain SGD step (linear in the gradient), and the averaged gradients are also compared
directly, against the mean of both ranks' gradients computed in this process: a sum (2x) or a
rank's own gradient fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.integration.grad_worker import LR, initial_model, loss_of, rank_batch
from tests.integration.test_distributed import _env, _port, accelerate_cmd

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _expected() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(mean gradient of ranks 0 and 1, weights after one SGD step with it)."""
    grads = []
    for rank in (0, 1):
        model = initial_model()
        loss_of(model, *rank_batch(rank)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    mean = {n: (grads[0][n] + grads[1][n]) / 2 for n in grads[0]}
    assert all(not torch.allclose(grads[0][n], grads[1][n]) for n in mean)  # ranks differ
    weights = {n: p.detach() - LR * mean[n] for n, p in initial_model().named_parameters()}
    return mean, weights


@pytest.mark.parametrize("backend", ["allreduce", "deepspeed"])
def test_two_ranks_average_their_gradients(tmp_path, backend):
    out = tmp_path / "result.safetensors"
    cmd = accelerate_cmd(2, _port())[:-2] + [
        "-m",
        "tests.integration.grad_worker",
        str(out),
        backend,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    got = load_file(str(out))
    mean, weights = _expected()
    for name in weights:
        if backend == "allreduce":
            torch.testing.assert_close(got[f"grad.{name}"], mean[name], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(got[f"weight.{name}"], weights[name], rtol=1e-6, atol=1e-7)
