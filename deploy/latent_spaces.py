"""The latent spaces a projection optimises in (see ``deploy.project`` for the algorithm).

- ``WSpace`` (stylegan2): a copy of the generator whose per-layer constant noise maps become
  variables (one map per target), with the latent started at the mean w (``w_avg``, estimated
  from ``w_avg_samples`` mapped samples; per requested class for a conditional model). W: one w
  broadcast to every layer; W+: one w per layer.
- ``ZSpace`` (every other family): z, started from the best of ``init_candidates`` random latents
  (and of every class of a conditional model when no label is given): z has no meaningful mean
  under pixel norm.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .distance import Distance
from .generator import LoadedGenerator

if TYPE_CHECKING:
    from .project import ProjectConfig


class LatentSpace:
    """A generator with an optimisable latent (and noise maps)."""

    name: str
    """w, w+ or z."""
    g: torch.nn.Module
    latent: torch.Tensor  # [N, L, D], requires grad
    std: float
    """Spread of the latents (sqrt of the mean squared distance to their mean)."""
    noise: dict[str, torch.Tensor]  # name -> [N, 1, r, r], requires grad (may be empty)
    c: torch.Tensor | None = None
    """The labels the space renders with ([N, c_dim] one-hot) or None."""

    def render(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [N, L, D] -> images [N, C, R, R] in about [-1, 1]."""
        raise NotImplementedError


class WSpace(LatentSpace):
    """stylegan2's W (or W+) with its noise maps as variables, started at w_avg."""

    def __init__(self, lg: LoadedGenerator, n: int, c: torch.Tensor | None, cfg: ProjectConfig):
        self.c = c
        g = copy.deepcopy(lg.generator).eval().requires_grad_(False)
        self.g, self.name = g, cfg.space
        gen = torch.Generator().manual_seed(cfg.seed)
        z = torch.randn([cfg.w_avg_samples, lg.z_dim], generator=gen).to(lg.device)
        with torch.no_grad():
            if c is None:
                cs = None
                if lg.c_dim:  # no label given: the mean over uniformly drawn classes
                    ids = torch.randint(lg.c_dim, [cfg.w_avg_samples], generator=gen)
                    cs = F.one_hot(ids, lg.c_dim).float().to(lg.device)
                w = g.mapping(z, cs)[:, 0]
                w_avg = w.mean(dim=0, keepdim=True).expand(n, -1)
                w_std = float((w - w_avg[:1]).square().sum(dim=1).mean().sqrt())
            else:  # one mean per class actually requested
                w_avg = torch.empty([n, g.w_dim], device=lg.device)
                stds = []
                for row in torch.unique(c, dim=0):
                    w = g.mapping(z, row[None].expand(len(z), -1))[:, 0]
                    mean = w.mean(dim=0)
                    w_avg[(c == row).all(dim=1)] = mean
                    stds.append(float((w - mean).square().sum(dim=1).mean().sqrt()))
                w_std = float(np.mean(stds))
        layers = g.num_ws if cfg.space == "w+" else 1
        self.latent = w_avg[:, None].repeat(1, layers, 1).clone().requires_grad_(True)
        self.std = w_std
        self.noise = {}
        for name, module in g.synthesis.named_modules():
            if getattr(module, "use_noise", False):
                res = module.noise_const.shape[-1]
                if cfg.noise_init == "random":
                    buf = torch.randn([n, 1, res, res], generator=gen).to(lg.device)
                else:
                    buf = module.noise_const[None, None].repeat(n, 1, 1, 1).clone()
                # Broadcasts like the [r, r] buffer; one map per target keeps targets independent.
                module.noise_const = buf.requires_grad_(cfg.optimize_noise)
                self.noise[name] = module.noise_const

    def render(self, latent: torch.Tensor) -> torch.Tensor:
        ws = latent.expand(-1, self.g.num_ws, -1) if latent.shape[1] == 1 else latent
        return self.g.synthesis(ws, noise_mode="const")


class ZSpace(LatentSpace):
    """z (and, unlabelled, the class), started from the best of random candidates."""

    def __init__(
        self,
        lg: LoadedGenerator,
        target: torch.Tensor,
        observe: Callable[[torch.Tensor], torch.Tensor],
        mask: torch.Tensor | None,
        c: torch.Tensor | None,
        distance: Distance,
        cfg: ProjectConfig,
    ):
        self.g, self.name, self.noise = lg.generator, "z", {}
        self.std = math.sqrt(lg.z_dim)  # E||z - 0||^2 = z_dim for z ~ N(0, I)
        gen = torch.Generator().manual_seed(cfg.seed)
        n = target.shape[0]
        classes = [None] if lg.c_dim == 0 else ([c] if c is not None else list(range(lg.c_dim)))
        best = torch.full([n], float("inf"), device=lg.device)
        best_z = torch.zeros([n, lg.z_dim], device=lg.device)
        best_c = None if lg.c_dim == 0 else torch.zeros([n, lg.c_dim], device=lg.device)
        with torch.no_grad():
            for _ in range(cfg.init_candidates):
                z = torch.randn([n, lg.z_dim], generator=gen).to(lg.device)
                for cls in classes:
                    cc = cls
                    if isinstance(cls, int):
                        cc = F.one_hot(torch.full([n], cls), lg.c_dim).float().to(lg.device)
                    d = distance(observe(self.g(z, cc).clamp(-1, 1)), target, mask)
                    better = d < best
                    best = torch.where(better, d, best)
                    best_z[better] = z[better]
                    if cc is not None:
                        best_c[better] = cc[better]
        self.c = best_c
        self.latent = best_z[:, None].clone().requires_grad_(True)

    def render(self, latent: torch.Tensor) -> torch.Tensor:
        return self.g(latent[:, 0], self.c)
