"""Mixed precision that works on the GPUs users have: ``amp: auto | bf16 | fp16 | off``.

bf16 keeps fp32's exponent range, so it needs no loss scaling, but only GPUs from Ampere on
(compute capability 8.0: A100, RTX 30xx, H100) compute it natively; Kaggle's T4 and P100 do
not. fp16 runs everywhere on CUDA but small gradients underflow, so it needs a gradient
scaler (``torch.amp.GradScaler``). ``auto`` picks bf16 where it is native and fp16 with a
scaler elsewhere; the CPU always runs fp32 (CPU autocast is slower than fp32 for 3-D
convolutions here). Inference uses the same choice, without the scaler.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

__all__ = ["AMP_MODES", "Precision", "resolve_precision", "inference_autocast"]

AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class Precision:
    """What a run computes in: the autocast dtype (None: fp32) and whether it scales losses."""

    dtype: torch.dtype | None
    scaled: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype] + (
            " with a gradient scaler" if self.scaled else "")

    def autocast(self, device: torch.device) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A scaler that does nothing unless this precision needs one."""
        return torch.amp.GradScaler(device.type, enabled=self.scaled)


def _mode(setting: str | bool) -> str:
    if setting is True:  # configs (and checkpoints) written before the modes existed
        return "auto"
    if setting is False:
        return "off"
    if setting not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {setting!r}")
    return setting


def resolve_precision(setting: str | bool, device: torch.device,
                      bf16_native: bool | None = None) -> Precision:
    """The precision ``setting`` means on ``device``; ``bf16_native`` defaults to asking the
    GPU (tests pass it to play a T4)."""
    mode = _mode(setting)
    if device.type != "cuda" or mode == "off":
        return Precision(None, False)
    if bf16_native is None:
        bf16_native = torch.cuda.is_bf16_supported(including_emulation=False)
    if mode == "bf16" and not bf16_native:
        raise ValueError("amp: bf16 asked for, but this GPU has no native bf16 (compute "
                         "capability < 8.0, e.g. a T4 or P100); use amp: auto or fp16")
    if mode == "bf16" or (mode == "auto" and bf16_native):
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, True)


def inference_autocast(device: torch.device, setting: str | bool = "auto"
                       ) -> AbstractContextManager:
    """Autocast for prediction: bf16 or fp16 on a GPU, fp32 on the CPU."""
    return resolve_precision(setting, device).autocast(device)
