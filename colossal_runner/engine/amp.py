"""Mixed precision: which ``amp`` values exist, the autocast context and the grad scaler.

All of it is ``torch.amp``; this module only maps the config value (``None``, ``'bf16'``,
``'fp16'``) to torch's objects and checks it early.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any, ContextManager, Optional

import torch
import torch.distributed as dist

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def check_amp(amp: Optional[str]) -> Optional[str]:
    """Return ``amp`` when it is a known value, else raise saying which values exist."""
    if amp is None or (isinstance(amp, str) and amp in AMP_DTYPES):
        return amp
    raise ValueError(f'amp must be None, {", ".join(repr(k) for k in AMP_DTYPES)}; got {amp!r}. '
                     f"Use 'bf16' (no loss scaling needed) or 'fp16' (with a GradScaler), or None "
                     f'for full precision.')


def autocast(amp: Optional[str], device: torch.device) -> ContextManager:
    """``torch.autocast`` on ``device``'s type with the dtype of ``amp``; a no-op for ``None``."""
    if amp is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def make_grad_scaler(amp: Optional[str], device: torch.device) -> Optional[torch.amp.GradScaler]:
    """A GradScaler on ``device`` for ``'fp16'`` (float16 gradients underflow without one)."""
    if amp != 'fp16':
        return None
    if device.type == 'cpu':
        # Lightning refuses fp16 on the CPU; it works here, so a warning says what it costs.
        warnings.warn("amp='fp16' on the CPU: most CPUs have no float16 arithmetic, so it runs several "
                      'times slower than full precision (5 to 10 times for configs/digits/cnn.py). Use '
                      "amp='bf16' or amp=None on the CPU; 'fp16' is for GPUs.", UserWarning, stacklevel=3)
    return torch.amp.GradScaler(device.type)


def sync_found_inf(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, group: Any) -> None:
    """Make every process of ``group`` agree on whether this step found inf/nan gradients.

    Call it after ``scaler.unscale_(optimizer)``. Each pipeline stage has its own scaler and
    sees only its own gradients; if one stage skipped a step that another took, their scales
    would diverge and the gradients one stage receives would be unscaled with the wrong
    factor. GradScaler has no public hook for this, so its per-optimizer record is used.
    """
    state = scaler._per_optimizer_states[id(optimizer)]
    found = state.get('found_inf_per_device') or {}
    if not found:
        return
    flags = list(found.values())
    merged = torch.stack([f.float().to(flags[0].device).reshape(()) for f in flags]).max()
    dist.all_reduce(merged, op=dist.ReduceOp.MAX, group=group)
    for flag in flags:
        flag.copy_(merged.to(flag.device))
