"""Image distances for GAN inversion: a multi-scale pixel distance (default) and LPIPS/VGG16.

Both take images in [-1, 1] ``[N, C, H, W]`` and an optional mask of known pixels ``[N, 1, H, W]``
(1: known, 0: unknown; fractional values weight) and return one distance per image ``[N]``.

- ``pixel`` (the default, needs no weights): the masked mean squared error at every level of a
  2x box-filter pyramid from full resolution down to 4x4, levels weighted equally. The coarse
  levels give the optimiser a smooth, low-frequency signal early (a plain MSE on a 1024 px image
  is dominated by texture), the fine ones pin down detail. Masks are pooled with the image
  (normalised convolution), so a level compares only what is known there.
- ``lpips``: the LPIPS distance (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep
  Features as a Perceptual Metric") on VGG16 features relu1_2 ... relu5_3: each layer's features
  unit-normalised over channels, squared difference weighted per channel by the learned linear
  heads when the file has them (uniform weights otherwise), averaged over space, summed over
  layers. The weights come from a local safetensors file the user gives (``features.<i>.weight``
  / ``.bias`` as in torchvision's ``vgg16().features``, optional ``lin<k>.model.1.weight`` or
  ``lin<k>.weight`` as in the ``lpips`` package); nothing is ever downloaded. NVlabs' projector
  uses the same VGG16 LPIPS features.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

Distance = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

# torchvision's vgg16().features layout: conv widths, "M" = max pool. LPIPS taps the ReLU after
# the last conv of each stage (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # indices in `features` of the tapped ReLUs
# LPIPS' input scaling layer (images in [-1, 1] -> ImageNet-like statistics).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
MIN_VGG_SIZE = 64  # smaller images are upsampled bilinearly: VGG16 pools four times before relu5_3


def _pool_masked(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Halve x where m says it is known: (pool(x*m) / pool(m), pool(m))."""
    pm = F.avg_pool2d(m, 2)
    return F.avg_pool2d(x * m, 2) / pm.clamp_min(1e-8), pm


def pixel_distance(
    synth: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Masked multi-scale MSE (see module doc): [N, C, H, W] x2 (+ [N, 1, H, W]) -> [N]."""
    if mask is None:
        mask = torch.ones_like(synth[:, :1])
    x, y, m = synth, target, mask.to(synth.dtype)
    total = synth.new_zeros(synth.shape[0])
    while True:
        err = ((x - y).square() * m).sum(dim=(1, 2, 3))
        total = total + err / (m.sum(dim=(1, 2, 3)) * x.shape[1]).clamp_min(1e-8)
        if min(x.shape[-2:]) <= 4 or min(x.shape[-2:]) % 2:
            return total
        x, m_next = _pool_masked(x, m)
        y, _ = _pool_masked(y, m)
        m = m_next


class VGG16Features(nn.Module):
    """images [N, 3, H, W] in LPIPS' scaled range -> the five tapped ReLU feature maps."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                taps.append(x)
                if len(taps) == len(_TAPS):
                    break
        return taps


class LPIPS(nn.Module):
    """LPIPS(VGG16) from a local safetensors file; ``forward(synth, target, mask) -> [N]``."""

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        from safetensors.torch import load_file

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no such LPIPS/VGG16 weights file; give a local .safetensors with "
                f"torchvision vgg16 'features.<i>.weight/bias' keys (never downloaded)"
            )
        if path.suffix != ".safetensors":
            raise ValueError(
                f"{path}: LPIPS weights must be a .safetensors file (pickles are never loaded); "
                f"convert a torchvision/lpips state dict with safetensors.torch.save_file"
            )
        state = load_file(str(path))
        self.vgg = VGG16Features()
        vgg_state = {k: v for k, v in state.items() if k.startswith("features.")}
        try:
            self.vgg.load_state_dict(vgg_state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"{path}: not VGG16 features weights ({str(exc).splitlines()[0]}); expected the "
                f"keys of torchvision's vgg16().features as features.<i>.weight/bias"
            ) from None
        lin = []
        for k in range(len(_TAPS)):
            w = state.get(f"lin{k}.model.1.weight", state.get(f"lin{k}.weight"))
            lin.append(None if w is None else w.reshape(1, -1, 1, 1).float())
        self.learned = all(w is not None for w in lin)
        for k, w in enumerate(lin):
            self.register_buffer(f"lin{k}", w if self.learned else None)
        self.register_buffer("shift", torch.tensor(_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).reshape(1, 3, 1, 1))
        self.name = f"lpips-vgg16{'' if self.learned else '-unit-weights'}({path.name})"
        self.eval().requires_grad_(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if min(x.shape[-2:]) < MIN_VGG_SIZE:
            x = F.interpolate(x, size=(MIN_VGG_SIZE, MIN_VGG_SIZE), mode="bilinear")
        return (x - self.shift) / self.scale

    def forward(
        self, synth: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if mask is not None:
            # Unknown pixels are set to mid-grey in both images, so they add no difference.
            synth, target = synth * mask, target * mask
        fs, ft = self.vgg(self._prepare(synth)), self.vgg(self._prepare(target))
        total = synth.new_zeros(synth.shape[0])
        for k, (a, b) in enumerate(zip(fs, ft)):
            a = a / (a.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            diff = (a - b).square()
            weight = getattr(self, f"lin{k}")
            diff = (diff * weight).sum(dim=1) if weight is not None else diff.sum(dim=1)
            total = total + diff.mean(dim=(1, 2))
        return total


def build_distance(
    kind: str, weights: str | Path | None, device: torch.device
) -> tuple[Distance, str]:
    """-> (distance function, its name as reported). ``kind``: auto | pixel | lpips."""
    if kind not in ("auto", "pixel", "lpips"):
        raise ValueError(f"distance: must be auto, pixel or lpips, got {kind!r}")
    if kind == "lpips" and weights is None:
        raise ValueError(
            "distance: lpips needs --lpips-weights FILE.safetensors (a local VGG16 file; "
            "nothing is downloaded); or use the default pixel distance"
        )
    if kind == "pixel" or (kind == "auto" and weights is None):
        return pixel_distance, "pixel-multiscale"
    lpips = LPIPS(weights).to(device)
    return lpips, lpips.name
