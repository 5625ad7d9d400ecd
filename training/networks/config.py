"""Architecture hyper-parameters shared by the generator families (``model:`` in a preset)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["stylegan2", "progan", "cyclegan", "mlp", "dcgan", "wgan", "wgan-gp"]


@dataclass(kw_only=True)
class ModelConfig:
    family: Family = "stylegan2"
    """Generator/discriminator family: ``stylegan2`` (Karras et al. 2020), ``progan`` (2018), or a
    classic one (``training/networks/classic.py``): ``mlp``, ``dcgan``, ``wgan``, ``wgan-gp``."""
    z_dim: int = 512
    """Latent (input) dimensionality."""
    w_dim: int = 512
    """Intermediate latent W dimensionality (stylegan2)."""
    map_depth: int = 8
    """Mapping-network layers (stylegan2; presets use 2 for small data, 8 for the paper)."""
    map_lr_mult: float = 0.01
    """Learning-rate multiplier of the mapping network (equalized lr; NVlabs 0.01, > 1 lets the
    mapping learn faster than the synthesis network)."""
    channel_base: int = 32768
    """Feature maps at resolution r are min(channel_base / r, channel_max)."""
    channel_max: int = 512
    """Upper bound of feature maps per layer."""
    mbstd_group: int = 4
    """Minibatch-stddev group size (0: no mbstd layer); clipped to the per-device batch."""
    mbstd_channels: int = 1
    """Minibatch-stddev feature channels."""
    conditional: bool = False
    """Condition G and D on the class labels of the dataset (needs a labelled manifest)."""
    latent_classes: int = 0
    """InfoGAN categorical latent code (Chen et al. 2016; stylegan2, unconditional): G reads a
    k-way code from its own z (the argmax of ``z[:, :k]``, uniform over the k values for a
    Gaussian z), embeds it as it embeds a label, and D gets a k-way Q head that must recover the
    code from the image (``loss.info_weight``): no labels are used, but G learns k discrete,
    recognisable modes instead of a continuum between them. 0: off."""
    w_avg_beta: float = 0.995
    """Decay of the running W average used by the truncation trick (stylegan2)."""
    conv_clamp: float | None = 256.0
    """Clamp every conv output to +-this (NVlabs ``conv_clamp``: keeps fp16 activations finite;
    None: never)."""
    num_fp16_res: int = 4
    """The N highest-resolution blocks of G and D that compute in reduced precision when
    ``train.mixed_precision`` is fp16/bf16 (NVlabs ``num_fp16_res``; never below 8x8; 0: none)."""
    d_architecture: Literal["resnet", "orig", "skip"] = "resnet"
    """StyleGAN2 discriminator: resnet (config F), orig (plain conv stack; the CIFAR setup of
    StyleGAN2-ADA) or skip (FromRGB at every resolution)."""
    # -- classic families (mlp, dcgan, wgan, wgan-gp); dcgan/wgan widths use channel_base/max
    mlp_hidden: int = 128
    """MLP GAN: width of each hidden layer of G and D (the tutorial's 128)."""
    mlp_layers: int = 1
    """MLP GAN: hidden layers in G and in D (the tutorial's 1)."""
    d_norm: Literal["auto", "batch", "layer", "none"] = "auto"
    """Classic conv critic normalisation (auto: batch for dcgan/wgan, layer for wgan-gp)."""

    def __post_init__(self) -> None:
        for name in (
            "z_dim",
            "w_dim",
            "map_depth",
            "channel_base",
            "channel_max",
            "mbstd_channels",
            "mlp_hidden",
            "mlp_layers",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")
        if self.num_fp16_res < 0:
            raise ValueError(
                f"num_fp16_res: must be >= 0 (0: all float32), got {self.num_fp16_res}"
            )
        if self.mbstd_group < 0:
            raise ValueError(f"mbstd_group: must be >= 0 (0 disables it), got {self.mbstd_group}")
        if not self.map_lr_mult > 0.0:
            raise ValueError(f"map_lr_mult: must be > 0, got {self.map_lr_mult}")
        if self.d_architecture not in ("resnet", "orig", "skip"):
            raise ValueError(
                f"d_architecture: must be resnet, orig or skip, got {self.d_architecture!r}"
            )
        if self.conv_clamp is not None and self.conv_clamp <= 0:
            raise ValueError(f"conv_clamp: must be positive or null, got {self.conv_clamp}")
        if self.latent_classes < 0 or self.latent_classes == 1:
            raise ValueError(
                f"latent_classes: must be 0 (off) or >= 2 code values, got {self.latent_classes}"
            )
        if self.latent_classes and (self.family != "stylegan2" or self.conditional):
            raise ValueError(
                "latent_classes: the InfoGAN code is for the unconditional stylegan2 family "
                f"(got family {self.family!r}, conditional {self.conditional}); set it to 0"
            )
        if self.latent_classes > self.z_dim:
            raise ValueError(
                f"latent_classes: the code is read from the first {self.latent_classes} latent "
                f"values, more than z_dim={self.z_dim}; lower it or raise model.z_dim"
            )
        if not 0.0 <= self.w_avg_beta < 1.0:
            raise ValueError(f"w_avg_beta: must be in [0, 1), got {self.w_avg_beta}")
