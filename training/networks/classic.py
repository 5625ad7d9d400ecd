"""The classic GAN networks: the tutorial's MLP GAN, DCGAN, and the WGAN / WGAN-GP critics.

- ``mlp`` (Goodfellow et al. 2014, as every tutorial writes it): G = Linear(z, 128), ReLU,
  Linear(128, H*W*C), Tanh; D = Linear(H*W*C, 128), ReLU, Linear(128, 1). D returns *logits*:
  the tutorial's final Sigmoid lives in the BCE-with-logits loss (the same maths, stable).
  Widths and the number of hidden layers are ``model.mlp_hidden`` / ``model.mlp_layers``.
- ``dcgan`` (Radford et al. 2015, sec. 3 and fig. 1): G = a 4x4 transposed conv from z to a
  4x4 map, then 4x4 stride-2 transposed convs (each + BatchNorm + ReLU) up to R/2, and a last
  one to the image with Tanh; D = 4x4 stride-2 convs + LeakyReLU(0.2), BatchNorm on every layer
  but the first, and a 4x4 conv to one logit. Weights N(0, 0.02), BatchNorm scale N(1, 0.02)
  (sec. 4). Feature maps at resolution r: ``min(channel_base // r, channel_max)``, so the
  paper's ngf = ndf = 64 at 64x64 (1024 -> 512 -> 256 -> 128 maps at 4..32) is channel_base
  2048, channel_max 512. Any power-of-two resolution from 16 up.
- ``wgan`` (Arjovsky et al. 2017): the DCGAN networks; the critic is the DCGAN D, which has no
  sigmoid here anyway (logits out), BatchNorm kept as in the paper's DCGAN critic.
  ``wgan-gp`` (Gulrajani et al. 2017, sec. 4): no BatchNorm in the critic, because the penalty
  is per sample and batch statistics couple the samples; layer normalisation instead
  (``GroupNorm(1, C)``: mean/variance over C, H, W of each sample, a per-channel affine), as
  the authors' code. ``model.d_norm`` overrides (``none`` or ``layer``; ``batch`` is refused).

Class conditioning (``model.conditional``): G concatenates a learned label embedding (a
bias-free linear map of the one-hot label, i.e. an embedding table) of z_dim features to z
(Mirza & Osindero 2014); D is a projection discriminator (Miyato & Koyama 2018, eq. 3):
``logit = psi(phi(x)) + <embed(y), phi(x)>`` with phi(x) the features that feed the last layer.

BatchNorm and several processes: the statistics are those of each forward pass's micro-batch,
by design (as the DCGAN reference, which normalises the real and the fake batch separately).
The trainer splits a global batch into the same micro-batches whatever the world size, so with
the same ``train.batch_per_device`` 2 processes compute exactly what 1 process computes with
gradient accumulation (SyncBatchNorm would make the statistics depend on the world size and
cost an all-reduce per layer). No running statistics are updated in training either, since
each rank would fold in only its own micro-batches: D's BatchNorm keeps none (it always
normalises by its batch), and G's (``MicroBatchNorm2d``) keeps buffers that only
``recalibrate_batchnorm`` fills, from fixed latents and the weights being sampled (G_ema's, not
G's), before a generator is used in eval mode (grids, evaluation, export). So every buffer is
the same on every rank and for every world size, and a sample does not depend on its batch.

Everything here is a pure ``nn.Module``: no devices, I/O or ``.backward()``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

NOISE_MODES = ("random", "const", "none")
MIN_CONV_RESOLUTION = 16
DCGAN_INIT_STD = 0.02


def _check_common(z_dim: int, c_dim: int, img_resolution: int, img_channels: int) -> None:
    if z_dim is not None and z_dim <= 0:
        raise ValueError(f"z_dim: must be a positive integer, got {z_dim}")
    if c_dim < 0:
        raise ValueError(f"c_dim: must be >= 0, got {c_dim}")
    if img_channels <= 0:
        raise ValueError(f"img_channels: must be a positive integer, got {img_channels}")
    if img_resolution <= 0:
        raise ValueError(f"img_resolution: must be a positive integer, got {img_resolution}")


def _check_conv_resolution(img_resolution: int) -> None:
    if img_resolution < MIN_CONV_RESOLUTION or img_resolution & (img_resolution - 1):
        raise ValueError(
            f"img_resolution: the DCGAN/WGAN networks need a power of two >= "
            f"{MIN_CONV_RESOLUTION}, got {img_resolution}; prep the data at 16, 32, 64, ..."
        )


def _label_input(
    module: nn.Module, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float
) -> torch.Tensor:
    """z (scaled by psi toward its mean 0) with the label embedding appended when conditional."""
    if truncation_psi != 1:
        z = z * truncation_psi
    if module.embed is None:
        return z
    if c is None:
        raise ValueError(
            f"c: the generator is conditional (c_dim {module.c_dim}); pass one-hot labels"
        )
    return torch.cat([z, module.embed(c.to(z.dtype))], dim=1)


def _check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode: must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")


def _projection(
    module: nn.Module, logits: torch.Tensor, features: torch.Tensor, c: torch.Tensor | None
) -> torch.Tensor:
    """Projection discriminator term ``<embed(c), phi(x)>`` added to the logits [N, 1]."""
    if module.embed is None:
        return logits
    if c is None:
        raise ValueError(
            f"c: the discriminator is conditional (c_dim {module.c_dim}); pass one-hot labels"
        )
    proj = (module.embed(c.to(features.dtype)) * features.flatten(1)).sum(dim=1, keepdim=True)
    return logits + proj


# --------------------------------------------------------------------------------------------
# MLP GAN


def _hidden_layers(width: int, hidden: int, layers: int) -> tuple[list[nn.Module], int]:
    """``layers`` x (Linear to ``hidden`` + ReLU) from ``width`` inputs -> (modules, out width)."""
    if hidden <= 0 or layers <= 0:
        raise ValueError(f"hidden, layers: must be positive, got {hidden}, {layers}")
    stack: list[nn.Module] = []
    for _ in range(layers):
        stack += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return stack, width


class MLPGenerator(nn.Module):
    """The tutorial's G. z: [N, z_dim], c: [N, c_dim] one-hot (or None when c_dim is 0)
    -> images [N, img_channels, R, R] in [-1, 1] (Tanh)."""

    def __init__(
        self,
        z_dim: int,  # latent dimensionality (the tutorial's 100)
        c_dim: int,  # label dimensionality (0: unconditional; c is then ignored)
        img_resolution: int,  # output side length R
        img_channels: int,  # output colour channels C
        hidden: int = 128,  # width of every hidden layer
        layers: int = 1,  # hidden layers (Linear + ReLU)
    ) -> None:
        super().__init__()
        _check_common(z_dim, c_dim, img_resolution, img_channels)
        self.z_dim, self.c_dim = z_dim, c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.embed = nn.Linear(c_dim, z_dim, bias=False) if c_dim > 0 else None
        stack, width = _hidden_layers(z_dim + (z_dim if c_dim > 0 else 0), hidden, layers)
        stack += [nn.Linear(width, img_channels * img_resolution**2), nn.Tanh()]
        self.net = nn.Sequential(*stack)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "random",
    ) -> torch.Tensor:
        """truncation_psi: z is scaled by psi toward its mean 0 (1: none); noise_mode: ignored
        (no noise inputs), accepted for the common API. -> images [N, C, R, R]."""
        _check_noise_mode(noise_mode)
        x = self.net(_label_input(self, z, c, truncation_psi))
        return x.view(-1, self.img_channels, self.img_resolution, self.img_resolution)


class MLPDiscriminator(nn.Module):
    """The tutorial's D. images: [N, C, R, R], c: [N, c_dim] one-hot or None -> logits [N, 1]."""

    def __init__(
        self,
        c_dim: int,  # label dimensionality (0: unconditional; c is then ignored)
        img_resolution: int,  # input side length R
        img_channels: int,  # input colour channels C
        hidden: int = 128,  # width of every hidden layer
        layers: int = 1,  # hidden layers (Linear + ReLU)
    ) -> None:
        super().__init__()
        _check_common(None, c_dim, img_resolution, img_channels)
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        stack, width = _hidden_layers(img_channels * img_resolution**2, hidden, layers)
        self.features = nn.Sequential(*stack)
        self.out = nn.Linear(width, 1)
        self.embed = nn.Linear(c_dim, width, bias=False) if c_dim > 0 else None

    def forward(self, images: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(self, images)
        features = self.features(images.flatten(1))
        return _projection(self, self.out(features), features, c)


def _check_input(module: nn.Module, images: torch.Tensor) -> None:
    expected = (module.img_channels, module.img_resolution, module.img_resolution)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"images: expected [N, {', '.join(map(str, expected))}], got {list(images.shape)}"
        )


# --------------------------------------------------------------------------------------------
# DCGAN / WGAN


def dcgan_channels(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps of the layers at ``resolution``: min(channel_base // resolution, channel_max)."""
    return max(1, min(channel_base // resolution, channel_max))


def dcgan_init_(module: nn.Module) -> None:
    """Radford et al. sec. 4: conv weights N(0, 0.02); norm scales N(1, 0.02), shifts 0; linear
    (label embedding) weights N(0, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, DCGAN_INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, DCGAN_INIT_STD)
            nn.init.zeros_(m.bias)


class MicroBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training forwards normalise by the micro-batch's statistics and leave the
    running statistics alone; eval forwards use the running statistics, which only
    ``recalibrate_batchnorm`` sets. Same parameters, buffers and state-dict keys as
    ``nn.BatchNorm2d``. x: [N, C, H, W] -> [N, C, H, W]."""

    recalibrating = False  # set by recalibrate_batchnorm: accumulate the running statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.recalibrating:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":  # batch statistics always: no running statistics to keep in sync
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if kind == "layer":  # LayerNorm over (C, H, W) of each sample, per-channel affine
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: must be batch, layer or none, got {kind!r}")


class DCGANGenerator(nn.Module):
    """DCGAN G. z: [N, z_dim], c: [N, c_dim] one-hot or None -> images [N, C, R, R] in [-1, 1]."""

    def __init__(
        self,
        z_dim: int,  # latent dimensionality (the paper's 100)
        c_dim: int,  # label dimensionality (0: unconditional; c is then ignored)
        img_resolution: int,  # output side length R, a power of two >= 16
        img_channels: int,  # output colour channels C
        channel_base: int = 2048,  # feature maps at resolution r: min(channel_base // r, channel_max)
        channel_max: int = 512,  # upper bound of feature maps per layer
    ) -> None:
        super().__init__()
        _check_common(z_dim, c_dim, img_resolution, img_channels)
        _check_conv_resolution(img_resolution)
        self.z_dim, self.c_dim = z_dim, c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.embed = nn.Linear(c_dim, z_dim, bias=False) if c_dim > 0 else None
        resolutions = [2**i for i in range(2, int(math.log2(img_resolution)))]  # 4 .. R/2
        ch = {r: dcgan_channels(r, channel_base, channel_max) for r in resolutions}
        in_features = z_dim + (z_dim if c_dim > 0 else 0)
        # 1x1 -> 4x4 (the paper's "project and reshape"), then 2x per layer; bias-free convs
        # before BatchNorm (the norm's shift is the bias).
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_features, ch[4], 4, 1, 0, bias=False),
            MicroBatchNorm2d(ch[4]),
            nn.ReLU(),
        ]
        for r in resolutions[1:]:
            layers += [
                nn.ConvTranspose2d(ch[r // 2], ch[r], 4, 2, 1, bias=False),
                MicroBatchNorm2d(ch[r]),
                nn.ReLU(),
            ]
        layers += [
            nn.ConvTranspose2d(ch[resolutions[-1]], img_channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "random",
    ) -> torch.Tensor:
        """truncation_psi: z scaled by psi toward 0 (1: none); noise_mode: ignored.
        -> images [N, C, R, R]."""
        _check_noise_mode(noise_mode)
        x = _label_input(self, z, c, truncation_psi)
        return self.net(x[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """DCGAN D / WGAN critic. images: [N, C, R, R], c: [N, c_dim] one-hot or None
    -> logits [N, 1] (no sigmoid: the BCE loss applies it; a critic has none)."""

    def __init__(
        self,
        c_dim: int,  # label dimensionality (0: unconditional; c is then ignored)
        img_resolution: int,  # input side length R, a power of two >= 16
        img_channels: int,  # input colour channels C
        channel_base: int = 2048,  # feature maps at resolution r: min(channel_base // r, channel_max)
        channel_max: int = 512,  # upper bound of feature maps per layer
        norm: str = "batch",  # batch (DCGAN, WGAN), layer (WGAN-GP) or none; never on layer 1
    ) -> None:
        super().__init__()
        _check_common(None, c_dim, img_resolution, img_channels)
        _check_conv_resolution(img_resolution)
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        resolutions = [2**i for i in range(int(math.log2(img_resolution)) - 1, 1, -1)]  # R/2 .. 4
        ch = {r: dcgan_channels(r, channel_base, channel_max) for r in resolutions}
        first = resolutions[0]
        # No norm on the first layer (Radford et al. sec. 3: BatchNorm on the G output and the
        # D input layer made training oscillate); bias-free convs, as the reference.
        layers: list[nn.Module] = [
            nn.Conv2d(img_channels, ch[first], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),
        ]
        for r in resolutions[1:]:
            layers += [
                nn.Conv2d(ch[2 * r], ch[r], 4, 2, 1, bias=norm == "none"),
                _norm(norm, ch[r]),
                nn.LeakyReLU(0.2),
            ]
        self.features = nn.Sequential(*layers)
        self.out = nn.Conv2d(ch[4], 1, 4, 1, 0, bias=False)  # [N, ch4, 4, 4] -> [N, 1, 1, 1]
        self.embed = nn.Linear(c_dim, ch[4] * 16, bias=False) if c_dim > 0 else None
        dcgan_init_(self)

    def forward(self, images: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(self, images)
        features = self.features(images)
        return _projection(self, self.out(features).flatten(1), features, c)


@torch.no_grad()
def recalibrate_batchnorm(
    generator: nn.Module,
    z: torch.Tensor,
    c: torch.Tensor | None = None,
    batch: int = 64,
) -> nn.Module:
    """Recompute the BatchNorm running statistics of ``generator`` from the latents ``z``
    [M, z_dim] (and labels ``c`` [M, c_dim]) in batches of ``batch``: the exact average of the
    per-batch statistics (momentum None), so the result depends only on the weights and z, not
    on the history of training batches, the rank or the world size. A no-op without BatchNorm.
    Restores the train/eval mode and momenta; returns ``generator``."""
    norms = [
        m
        for m in generator.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return generator
    was_training = generator.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.recalibrating = True
    generator.train()
    try:
        for start in range(0, z.shape[0], batch):
            generator(z[start : start + batch], None if c is None else c[start : start + batch])
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
            m.recalibrating = False
        generator.train(was_training)
    return generator


# --------------------------------------------------------------------------------------------
# The family-module protocol (training/networks/__init__.py): one module serves the four
# classic families; ``arch`` in the stored kwargs picks the class from an explicit dict.

GENERATORS: dict[str, type[nn.Module]] = {"mlp": MLPGenerator, "dcgan": DCGANGenerator}
DISCRIMINATORS: dict[str, type[nn.Module]] = {"mlp": MLPDiscriminator, "dcgan": DCGANDiscriminator}
ARCH = {"mlp": "mlp", "dcgan": "dcgan", "wgan": "dcgan", "wgan-gp": "dcgan"}
DEFAULT_D_NORM = {"dcgan": "batch", "wgan": "batch", "wgan-gp": "layer"}


def _arch(value: str, what: str) -> str:
    if value not in GENERATORS:
        raise ValueError(f"{what}: arch must be one of {', '.join(GENERATORS)}, got {value!r}")
    return value


def Generator(arch: str, **kwargs) -> nn.Module:  # noqa: N802 (the protocol's constructor name)
    """Build the generator of ``arch`` (mlp | dcgan) from its stored kwargs."""
    return GENERATORS[_arch(arch, "Generator")](**kwargs)


def Discriminator(arch: str, **kwargs) -> nn.Module:  # noqa: N802
    """Build the discriminator / critic of ``arch`` (mlp | dcgan) from its stored kwargs."""
    return DISCRIMINATORS[_arch(arch, "Discriminator")](**kwargs)


def _family_arch(model_cfg: ModelConfig) -> str:
    if model_cfg.family not in ARCH:
        raise ValueError(
            f"model.family: {model_cfg.family!r} is not a classic family ({', '.join(ARCH)})"
        )
    return ARCH[model_cfg.family]


def d_norm_for(model_cfg: ModelConfig) -> str:
    """The critic normalisation of the family, or ``model.d_norm`` when set."""
    default = DEFAULT_D_NORM.get(model_cfg.family, "none")
    norm = default if model_cfg.d_norm == "auto" else model_cfg.d_norm
    if model_cfg.family == "wgan-gp" and norm == "batch":
        raise ValueError(
            "model.d_norm: batch is not valid for wgan-gp (the gradient penalty is per sample, "
            "BatchNorm couples the samples; Gulrajani et al. sec. 4); use layer or none"
        )
    return norm


def generator_kwargs(model_cfg: ModelConfig, resolution: int, channels: int, c_dim: int) -> dict:
    """-> plain JSON-able ``Generator`` kwargs (c_dim is 0 unless ``model.conditional``)."""
    arch = _family_arch(model_cfg)
    kwargs = {
        "arch": arch,
        "z_dim": int(model_cfg.z_dim),
        "c_dim": int(c_dim) if model_cfg.conditional else 0,
        "img_resolution": int(resolution),
        "img_channels": int(channels),
    }
    if arch == "mlp":
        kwargs.update(hidden=int(model_cfg.mlp_hidden), layers=int(model_cfg.mlp_layers))
    else:
        kwargs.update(
            channel_base=int(model_cfg.channel_base), channel_max=int(model_cfg.channel_max)
        )
    return kwargs


def discriminator_kwargs(
    model_cfg: ModelConfig, resolution: int, channels: int, c_dim: int
) -> dict:
    """-> plain JSON-able ``Discriminator`` kwargs (c_dim is 0 unless ``model.conditional``)."""
    arch = _family_arch(model_cfg)
    kwargs = {
        "arch": arch,
        "c_dim": int(c_dim) if model_cfg.conditional else 0,
        "img_resolution": int(resolution),
        "img_channels": int(channels),
    }
    if arch == "mlp":
        if model_cfg.d_norm not in ("auto", "none"):
            raise ValueError(
                f"model.d_norm: the mlp family has no norm layers, got "
                f"{model_cfg.d_norm!r}; leave it auto"
            )
        kwargs.update(hidden=int(model_cfg.mlp_hidden), layers=int(model_cfg.mlp_layers))
    else:
        kwargs.update(
            channel_base=int(model_cfg.channel_base),
            channel_max=int(model_cfg.channel_max),
            norm=d_norm_for(model_cfg),
        )
    return kwargs


__all__ = [
    "ARCH",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "Discriminator",
    "MicroBatchNorm2d",
    "Generator",
    "MLPDiscriminator",
    "MLPGenerator",
    "d_norm_for",
    "dcgan_channels",
    "dcgan_init_",
    "discriminator_kwargs",
    "generator_kwargs",
    "recalibrate_batchnorm",
]
