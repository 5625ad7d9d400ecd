"""Count the calls that make the host wait for the device (or copy host data to it).

Used by the tests that promise "no host sync in the hot loop" (augment, the ADA controller, a
training tick). A ``TorchFunctionMode`` sees every torch call made from Python, including those
inside Kornia, and records:

- reads of device values on the host: ``Tensor.item``, ``tolist``, ``__bool__``, ``__float__``,
  ``__int__``, ``__index__``, ``numpy``, ``cpu``, and ``.to("cpu")`` / ``.to(device)`` of a tensor
  that is on another device;
- tensors built from host data: ``torch.tensor``, ``torch.as_tensor``, ``torch.from_numpy``,
  ``torch.asarray``, ``Tensor.new_tensor`` (on a GPU these are a host-to-device copy that waits
  for the host; on the CPU they are the same calls, so a CPU test catches them too).

Creating constants with fill kernels on the device (``torch.full``, ``zeros``, ``arange``,
``eye``) is not a sync and is not counted.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

_READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
}
_HOST_BUILT = {torch.tensor, torch.as_tensor, torch.from_numpy, torch.asarray}


class HostSyncCounter(TorchFunctionMode):
    """``with HostSyncCounter() as syncs: ...`` then ``syncs.calls`` lists what was caught."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
        if func in _READS or func in _HOST_BUILT:
            # as_tensor of a tensor already on the target device is a no-op: not counted.
            if not (func is torch.as_tensor and args and torch.is_tensor(args[0])):
                self.calls.append(name)
        elif getattr(func, "__name__", "") == "new_tensor":
            self.calls.append(name)
        elif func is torch.Tensor.to and args and torch.is_tensor(args[0]):
            target = kwargs.get("device")
            for a in args[1:]:
                if isinstance(a, (str, torch.device)):
                    target = a
            if target is not None and torch.device(target) != args[0].device:
                self.calls.append(f"Tensor.to({target})")
        return func(*args, **kwargs)
