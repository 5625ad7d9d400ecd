"""The FID Inception-v3: the TensorFlow 2015-12-05 graph that FID/KID/IS numbers in the literature use.

Szegedy et al. 2016, "Rethinking the Inception Architecture", as frozen in Google's
``inception-2015-12-05.tgz`` (the graph of the original FID code, Heusel et al. 2017) and ported
to PyTorch by torch-fidelity (``torch_fidelity/feature_extractor_inceptionv3.py``) and pytorch-fid
(``src/pytorch_fid/inception.py``, its ``FIDInception*`` blocks). This is ganforge's own code for
the same computation, written from reading both (their licenses differ from ours):

- uint8 images -> float32, resized to 299x299 with TensorFlow 1.x bilinear interpolation
  (``resize_bilinear_tf1``), normalised as ``(x - 128) / 128``;
- the stem and the 11 mixed blocks; unlike torchvision's Inception-v3 the TF graph's average
  pools ignore the zero padding (``count_include_pad=False``, blocks A, C and the first E) and the
  last block (Mixed_7c) max-pools its pool branch;
- batch norm with TF's fixed statistics (eps 1e-3), never updated: ``FrozenBatchNorm``, so the
  network has no train mode and image i's features never depend on the rest of the batch;
- ``forward`` -> the 2048-d global average pool ("pool3", what FID/KID/PR use);
  ``logits_unbiased`` -> ``features @ fc.weight.T`` without the bias, torch-fidelity's input to
  the Inception Score (1008 classes, as in the TF graph).

Weights: ``weights-inception-2015-12-05-6726825d.pth`` from torch-fidelity's v0.2.0 release, a
``torch.save``d dict of 472 float32 tensors (94 conv+BN units x 5 + ``fc.weight``/``fc.bias``,
no ``num_batches_tracked``) under exactly the keys of torch-fidelity's
``FeatureExtractorInceptionV3`` (``Conv2d_1a_3x3.conv.weight``, ``Mixed_7c.branch_pool.bn.running_var``,
...). ``FIDInceptionV3.from_file`` reads it with ``weights_only=True`` and refuses any other key set
or shape with a one-line error naming the file and the first bad key. Finding the file (never a
download) is ``features.py``'s job.

Equivalence, checked once outside the suite (it needs torch-fidelity, which cannot live in our
venv): torch-fidelity 0.4.0's ``FeatureExtractorInceptionV3`` (imported without its package
``__init__``) in a scratch venv with torch 2.13.0 CPU, both networks loaded from one file of random
weights (He-scaled convs, random batch-norm statistics), 3 uint8 images per size, float32, one
thread. Max |ours - theirs| / max |theirs|:

    size      TF1 resize (abs)   pool3 features   logits_unbiased
    16x16     0                  0                0
    32x32     0                  0                0
    299x299   0                  0                0
    512x512   0                  0                0
    48x80     0                  0                0

(bit-identical: the same operations in the same order). Swapping Mixed_7c's max pool for an
average pool moves the features by 15% in the same check, and torch's centred bilinear resize
differs from the TF1 one by up to 161 grey levels. tests/unit/training/test_inception_wiring.py
pins torch-fidelity's file format and a few of its outputs on seeded weights.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008  # the TF graph's softmax: 1000 ImageNet classes + 8 unused


class InceptionWeightsFormatError(ValueError):
    """The weights file is not torch-fidelity's Inception state dict (wrong key, shape or content)."""


# -- input path ----------------------------------------------------------------------------------
def _tf1_sample_points(
    in_size: int, out_size: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input rows (or columns) under each output one, TF1 style -> (lower, upper, fraction).

    TF 1.x ``resize_bilinear(align_corners=False)`` has no half-pixel offset: output index ``i``
    reads input coordinate ``i * in/out`` (the scale in float32, as TF's kernel), so the image
    shifts by half an output pixel and the last rows repeat the edge. torch's own bilinear
    (``F.interpolate``) centres pixels and gives different numbers.
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32, device=device)
    coordinate = torch.arange(out_size, dtype=dtype, device=device) * scale
    lower = coordinate.long()  # floor: coordinates are >= 0
    upper = (lower + 1).clamp_max(in_size - 1)
    return lower, upper, coordinate - lower.to(dtype)


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float ``[N, C, H, W] -> [N, C, size[0], size[1]]``, TensorFlow 1.x bilinear, no antialiasing.

    The arithmetic follows TF's ``resize_bilinear_op.cc``: interpolate along x in the lower and
    upper rows, then between those along y (``a + (b - a) * t`` each time), which makes the
    result match torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x`` bit for bit.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"resize_bilinear_tf1 needs float [N, C, H, W], got {tuple(images.shape)} {images.dtype}"
        )
    height, width = images.shape[2], images.shape[3]
    y_lo, y_hi, dy = _tf1_sample_points(height, size[0], images.device, images.dtype)
    x_lo, x_hi, dx = _tf1_sample_points(width, size[1], images.device, images.dtype)

    def along_x(rows: torch.Tensor) -> torch.Tensor:
        left, right = rows.index_select(3, x_lo), rows.index_select(3, x_hi)
        return left + (right - left) * dx

    top = along_x(images.index_select(2, y_lo))
    bottom = along_x(images.index_select(2, y_hi))
    return top + (bottom - top) * dy[:, None]


# -- layers --------------------------------------------------------------------------------------
class FrozenBatchNorm(nn.Module):
    """Batch norm with fixed statistics: ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``.

    The state-dict keys are those of ``nn.BatchNorm2d`` minus ``num_batches_tracked`` (the released
    file has none). Always the inference formula, so there is no train mode to forget.
    """

    def __init__(self, channels: int, eps: float = 1e-3) -> None:  # TF's batchnorm epsilon
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


class ConvUnit(nn.Module):
    """Conv (no bias) -> frozen batch norm -> ReLU: one ``conv``/``batchnorm`` pair of the TF graph."""

    def __init__(self, in_channels: int, out_channels: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.bn = FrozenBatchNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's SAME-padded average pool divides by the number of real pixels under the window
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _run(x: torch.Tensor, *units: nn.Module) -> torch.Tensor:
    for unit in units:
        x = unit(x)
    return x


# -- the mixed blocks (attribute names = the released file's keys) ------------------------------
class InceptionA(nn.Module):
    """Mixed_5b/c/d (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + pool_features ch."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvUnit(in_channels, 64, 1)
        self.branch5x5_1 = ConvUnit(in_channels, 48, 1)
        self.branch5x5_2 = ConvUnit(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvUnit(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvUnit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvUnit(96, 96, 3, padding=1)
        self.branch_pool = ConvUnit(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                _run(x, self.branch5x5_1, self.branch5x5_2),
                _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                self.branch_pool(_tf_avg_pool(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    """Mixed_6a (35 -> 17 px): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 480 + in_channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvUnit(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvUnit(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvUnit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvUnit(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class InceptionC(nn.Module):
    """Mixed_6b..e (17x17): factorised 7x7 convolutions (1x7 then 7x1) with ``c7`` channels -> 768."""

    def __init__(self, in_channels: int, c7: int) -> None:
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvUnit(in_channels, 192, 1)
        self.branch7x7_1 = ConvUnit(in_channels, c7, 1)
        self.branch7x7_2 = ConvUnit(c7, c7, **row)
        self.branch7x7_3 = ConvUnit(c7, 192, **col)
        self.branch7x7dbl_1 = ConvUnit(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvUnit(c7, c7, **col)
        self.branch7x7dbl_3 = ConvUnit(c7, c7, **row)
        self.branch7x7dbl_4 = ConvUnit(c7, c7, **col)
        self.branch7x7dbl_5 = ConvUnit(c7, 192, **row)
        self.branch_pool = ConvUnit(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3)
        return torch.cat(
            [
                self.branch1x1(x),
                _run(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
                _run(x, *double, self.branch7x7dbl_4, self.branch7x7dbl_5),
                self.branch_pool(_tf_avg_pool(x)),
            ],
            1,
        )


class InceptionD(nn.Module):
    """Mixed_7a (17 -> 8 px): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 512 + in_channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvUnit(in_channels, 192, 1)
        self.branch3x3_2 = ConvUnit(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvUnit(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvUnit(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvUnit(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvUnit(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4)
        return torch.cat(
            [
                _run(x, self.branch3x3_1, self.branch3x3_2),
                _run(x, *seven),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class InceptionE(nn.Module):
    """Mixed_7b/c (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1 -> 2048 channels.

    ``max_pool``: Mixed_7c's pool branch max-pools in the TF graph (an average pool in the paper
    and in torchvision; pytorch-fid's ``FIDInceptionE_2`` notes the same); Mixed_7b averages.
    """

    def __init__(self, in_channels: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvUnit(in_channels, 320, 1)
        self.branch3x3_1 = ConvUnit(in_channels, 384, 1)
        self.branch3x3_2a = ConvUnit(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvUnit(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvUnit(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvUnit(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvUnit(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvUnit(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvUnit(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _tf_avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            1,
        )


# -- the network ---------------------------------------------------------------------------------
class FIDInceptionV3(nn.Module):
    """``uint8 [N, 3, H, W]`` (any H, W) -> pool3 features ``float32 [N, 2048]``.

    Build with ``FIDInceptionV3.from_file(path)``; ``FIDInceptionV3()`` alone has untrained
    weights (default init, unit batch norms).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvUnit(3, 32, 3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = ConvUnit(32, 32, 3)  # 147
        self.Conv2d_2b_3x3 = ConvUnit(32, 64, 3, padding=1)  # 147, then maxpool -> 73
        self.Conv2d_3b_1x1 = ConvUnit(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvUnit(80, 192, 3)  # 71, then maxpool -> 35
        self.Mixed_5b = InceptionA(192, pool_features=32)  # 256 ch
        self.Mixed_5c = InceptionA(256, pool_features=64)  # 288
        self.Mixed_5d = InceptionA(288, pool_features=64)  # 288
        self.Mixed_6a = InceptionB(288)  # 768 ch, 17 px
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)  # 1280 ch, 8 px
        self.Mixed_7b = InceptionE(1280, max_pool=False)  # 2048 ch
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(NUM_FEATURES, NUM_CLASSES)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> FIDInceptionV3:
        """The network with the weights of ``path`` (torch-fidelity's format, checked strictly)."""
        state = read_weights(path)
        net = cls()
        net.load_state_dict(state)
        return net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"FID Inception input must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        x = resize_bilinear_tf1(images.float(), (INPUT_SIZE, INPUT_SIZE))
        x = (x - 128) / 128  # the graph's Sub/Mul by 1/128: [0, 255] -> [-1, 0.99]
        x = _run(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = _run(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = _run(x, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a)
        x = _run(x, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e)
        x = _run(x, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def logits_unbiased(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, 2048] -> [N, 1008]``: the softmax layer without its bias (torch-fidelity's IS input)."""
        return features.mm(self.fc.weight.T.to(features))


def weights_format() -> dict[str, torch.Size]:
    """Key -> shape of the released weights file: ``FIDInceptionV3``'s state dict (built on the meta
    device, nothing allocated). tests/unit/training/test_inception_wiring.py pins it to
    torch-fidelity's format."""
    with torch.device("meta"):
        return {key: value.shape for key, value in FIDInceptionV3().state_dict().items()}


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` if its keys and shapes are exactly ``weights_format()``, else a
    one-line ``InceptionWeightsFormatError`` naming the file and the first bad key."""
    hint = (
        "expected torch-fidelity's weights-inception-2015-12-05-6726825d.pth (docs/evaluation.md)"
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InceptionWeightsFormatError(
            f"{path}: not a readable torch state dict ({reason}); {hint}"
        ) from None
    if not isinstance(state, dict):
        raise InceptionWeightsFormatError(
            f"{path}: holds a {type(state).__name__}, not a state dict; {hint}"
        )
    expected = weights_format()
    for key, shape in expected.items():
        value = state.get(key)
        if value is None:
            raise InceptionWeightsFormatError(f"{path}: key {key!r} is missing; {hint}")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise InceptionWeightsFormatError(f"{path}: {key!r} is not a float tensor; {hint}")
        if value.shape != shape:
            raise InceptionWeightsFormatError(
                f"{path}: {key!r} has shape {list(value.shape)}, expected {list(shape)}; {hint}"
            )
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise InceptionWeightsFormatError(
            f"{path}: unexpected key {unexpected[0]!r} ({len(unexpected)} in all); {hint}"
        )
    return state
