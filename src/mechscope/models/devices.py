"""Devices: which ones this machine's torch can run on, and a clear error for one it cannot."""

from __future__ import annotations

from typing import Any

import torch


def check_device(value: Any) -> Any:
    """``value`` (None, a device string or a ``torch.device``) if this torch can run on it, else
    ``ValueError`` naming it and the devices that are here (was torch's bare AssertionError for "cuda"
    without a GPU)."""
    if value is None:
        return None
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={value!r} is not a device ({str(err).splitlines()[0][:120]}); valid here: "
                         f"{', '.join(available_devices())}") from None
    kinds = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "meta": True}
    if not kinds.get(dev.type, False) or (dev.type == "cuda" and dev.index is not None
                                          and dev.index >= torch.cuda.device_count()):
        raise ValueError(f"device={value!r}: this machine's torch cannot run there; valid here: "
                         f"{', '.join(available_devices())}")
    return value


def available_devices() -> list[str]:
    """The devices this machine's torch can run on."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        out.append("mps")
    return out
