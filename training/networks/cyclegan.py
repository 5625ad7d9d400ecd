"""CycleGAN networks (Zhu et al. 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks", sec. 4 and appendix 7.2; official code
junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``, read for the details below).

- ``ResnetGenerator`` (after Johnson et al. 2016): c7s1-ngf, two stride-2 3x3 convs (d2ngf,
  d4ngf), ``n_blocks`` residual blocks at 1/4 resolution (6 for 128x128, 9 for 256x256 in the
  paper), two stride-2 transposed convs back up, c7s1-C and tanh. Reflection padding everywhere
  a conv keeps the size, instance norm without affine parameters after every conv but the last
  (so convs before a norm have a bias as in the official code: the norm removes it anyway).
  Fully convolutional: any H, W that are multiples of 4 work.
- ``PatchDiscriminator`` (the 70x70 PatchGAN of pix2pix, Isola et al. 2017, ``n_layers=3``): 4x4
  convs with stride 2, LeakyReLU 0.2, instance norm from the second layer on, then a stride-1
  layer and a stride-1 conv to one channel. It returns a map of logits, one per overlapping
  70x70 patch (the receptive field for n_layers=3), not one score per image.
- ``ImagePool`` (Shrivastava et al. 2017, as CycleGAN sec. 4 uses it): D sees a history of 50
  generated images, not only the newest ones. A small class with its own ``state_dict``.

Weights start from N(0, 0.02) as the official ``init_weights('normal')``. Pure modules: no
devices, files or ``.backward()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(kw_only=True)
class CycleGANNetConfig:
    """Architecture of the two generators and two discriminators (``cyclegan:`` networks)."""

    ngf: int = 64
    """Generator feature maps after the first conv (x2 and x4 after the two downsamplings)."""
    ndf: int = 64
    """Discriminator feature maps of the first layer (doubling per layer, at most 8x)."""
    n_blocks: int | None = None
    """Residual blocks of the generator (None: 9 at >= 256 px, else 6, as the paper)."""
    d_layers: int = 3
    """PatchGAN stride-2 layers (3: the 70x70 PatchGAN; each more doubles the patch)."""

    def __post_init__(self) -> None:
        for name in ("ngf", "ndf", "d_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")
        if self.n_blocks is not None and self.n_blocks < 0:
            raise ValueError(f"n_blocks: must be >= 0 or null, got {self.n_blocks}")


def default_blocks(resolution: int) -> int:
    """Residual blocks as the paper: 9 for 256x256 (and larger) images, 6 for 128x128 and below."""
    return 9 if resolution >= 256 else 6


def min_resolution(d_layers: int) -> int:
    """Smallest training resolution for the PatchGAN: instance norm needs more than one value
    per channel in its last normalised layer (size ``res / 2**d_layers - 1``)."""
    return 3 * 2**d_layers


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """N(0, gain) conv weights and zero biases (the official ``init_type='normal'``)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _norm(channels: int) -> nn.Module:
    # affine=False, no running statistics: the official 'instance' setting; the statistics are
    # those of each image, so training and inference compute the same thing at any batch size.
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """x + (reflect-pad, 3x3 conv, IN, ReLU, reflect-pad, 3x3 conv, IN)(x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """images [N, C_in, H, W] in [-1, 1] -> images [N, C_out, H, W] in (-1, 1); H, W % 4 == 0."""

    def __init__(
        self,
        *,
        in_channels: int = 3,  # channels of the input domain
        out_channels: int = 3,  # channels of the output domain
        ngf: int = 64,  # feature maps at full resolution (x2, x4 after each downsampling)
        n_blocks: int = 9,  # residual blocks at 1/4 resolution (0: none)
        resolution: int = 256,  # native (training) resolution; recorded, the net is convolutional
    ) -> None:
        super().__init__()
        self.img_channels = out_channels
        self.in_channels = in_channels
        self.img_resolution = resolution
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7),
            _norm(ngf),
            nn.ReLU(inplace=True),
        ]
        for mult in (1, 2):  # two stride-2 downsamplings: ngf -> 2 ngf -> 4 ngf
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                _norm(ngf * mult * 2),
                nn.ReLU(inplace=True),
            ]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):  # two stride-2 transposed convs back: 4 ngf -> 2 ngf -> ngf
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1
                ),
                _norm(ngf * mult // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] % 4 or images.shape[-2] % 4:
            raise ValueError(
                f"ResnetGenerator: height and width must be multiples of 4, got "
                f"{tuple(images.shape[-2:])}"
            )
        return self.model(images)


class PatchDiscriminator(nn.Module):
    """images [N, C, H, W] -> logits [N, 1, h, w], one per overlapping patch (70x70 for
    ``n_layers=3``); h = w = H / 2**n_layers - 2."""

    def __init__(
        self,
        *,
        in_channels: int = 3,  # image channels
        ndf: int = 64,  # feature maps of the first layer (x2 per layer, at most x8)
        n_layers: int = 3,  # stride-2 layers (3: the 70x70 PatchGAN)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last of these keeps the size
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1),
                _norm(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def generator_kwargs(cfg: CycleGANNetConfig, resolution: int, channels: int) -> dict:
    """Plain JSON-able constructor arguments of one generator (the export stores them)."""
    blocks = cfg.n_blocks if cfg.n_blocks is not None else default_blocks(resolution)
    return {
        "in_channels": channels,
        "out_channels": channels,
        "ngf": cfg.ngf,
        "n_blocks": blocks,
        "resolution": resolution,
    }


def discriminator_kwargs(cfg: CycleGANNetConfig, resolution: int, channels: int) -> dict:
    if resolution < min_resolution(cfg.d_layers):
        raise ValueError(
            f"cyclegan.d_layers: {cfg.d_layers} PatchGAN layers need images of at least "
            f"{min_resolution(cfg.d_layers)} px, the data is {resolution} px; lower d_layers"
        )
    return {"in_channels": channels, "ndf": cfg.ndf, "n_layers": cfg.d_layers}


# ----------------------------------------------------------------------------------------------
# The image history pool


class ImagePool:
    """A history of ``size`` generated images for the discriminator (CycleGAN sec. 4).

    As the official ``ImagePool``: while the pool is not full every image is stored and returned
    as it is; then each image is, with probability 1/2, swapped for a random stored one (which
    D sees instead, the new one taking its place), else returned unchanged. ``size`` 0 disables
    it. The randomness comes from torch's RNG (or ``generator``) and the choices are applied with
    tensor ops, so a step never waits for the host.

    For multi-process training, the two halves are separate: ``plan`` draws the choices for
    some images, ``select`` returns what D sees for them (reading the pool as it was at the start
    of the step) and ``push`` stores the whole global batch in order, identically on every rank.
    With one image per step (the paper's batch 1) this is exactly the sequential pool; with
    larger batches an image stored in this step can be drawn from the next step on.
    """

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"pool size: must be >= 0, got {size}")
        self.size = size
        self.count = 0  # images stored so far (host int: the fill phase is known without a sync)
        self.images: torch.Tensor | None = None  # [size, C, H, W] once the first image arrives

    def plan(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (swap [n] bool, index [n] int64): the random choices for ``n`` images."""
        size = max(self.size, 1)
        gen_device = generator.device if generator is not None else device
        swap = torch.rand(n, generator=generator, device=gen_device) < 0.5
        index = torch.randint(0, size, (n,), generator=generator, device=gen_device)
        return swap.to(device), index.to(device)

    def select(
        self, images: torch.Tensor, swap: torch.Tensor, index: torch.Tensor, start: int = 0
    ) -> torch.Tensor:
        """What D sees for ``images`` (positions ``start ...`` of this step's global batch)."""
        if self.size == 0 or self.images is None:
            return images  # empty at the start of the step: every image is returned as it is
        n = images.shape[0]
        filling = torch.arange(start, start + n) + self.count < self.size  # host-known
        if bool(filling.all()):
            return images
        use_stored = self._use_stored(swap, index) & ~filling.to(images.device)
        stored = self.images[index].to(images.dtype)
        return torch.where(use_stored[:, None, None, None], stored, images)

    def _use_stored(self, swap: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # only slots filled before this step can be drawn (the pool as of the step's start)
        return swap & (index < self.count)

    @torch.no_grad()
    def push(self, images: torch.Tensor, swap: torch.Tensor, index: torch.Tensor) -> None:
        """Store this step's global batch ``images`` with the choices of ``plan``: the first
        fill the free slots in order; each later one whose ``select`` returned a stored image
        takes that image's slot (in order, so a later choice of the same slot wins)."""
        if self.size == 0 or images.shape[0] == 0:
            return
        images = images.detach().float()
        if self.images is None:
            self.images = images.new_zeros((self.size, *images.shape[1:]))
        replace = self._use_stored(swap, index)  # with the count at the start of the step
        fill = min(self.size - self.count, images.shape[0])
        if fill > 0:  # the fill phase: slots count .. count+fill-1, in order
            self.images[self.count : self.count + fill] = images[:fill]
        for i in range(fill, images.shape[0]):
            keep = self.images[index[i]]
            new = torch.where(replace[i], images[i], keep)
            self.images.index_copy_(0, index[i : i + 1], new[None])
        self.count += fill

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One step on one process: plan, select and push ``images``; -> what D sees."""
        swap, index = self.plan(images.shape[0], images.device, generator)
        out = self.select(images, swap, index)
        self.push(images, swap, index)
        return out

    def state_dict(self) -> dict:
        return {
            "size": self.size,
            "count": self.count,
            "images": None if self.images is None else self.images.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        if int(state["size"]) != self.size:
            raise ValueError(
                f"image pool: the checkpoint's pool holds {state['size']} images, the config "
                f"{self.size}; set the pool size back to resume"
            )
        self.count = int(state["count"])
        images = state["images"]
        self.images = None if images is None else images.to(device).clone()
