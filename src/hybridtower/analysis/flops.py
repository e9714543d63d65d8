"""Counting FLOPs with ``torch.utils.flop_counter`` so that attention is not silently missed.

Convention: **1 multiply-add = 2 FLOPs**, counted for the matrix-product and convolution operators
that ``FlopCounterMode`` knows (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution``, the SDPA
kernels it has formulas for). Elementwise work (LayerNorm, softmax, GELU, additions, top-k) is not
counted; at these sizes it is well under 1 % of the total. ViT-B/32 on one 224 px image counts
8.82 GFLOPs under this convention (4.41 GMACs), the figure usually published as "4.4 GFLOPs (MACs)"
or "8.8 GFLOPs".

Two CPU pitfalls make a naive count wrong, and :func:`counting` removes both:

* ``nn.MultiheadAttention`` in eval mode under ``no_grad`` takes its "fast path"
  (``torch._native_multi_head_attention``), which the counter does not see at all: the q/k/v and
  output projections *and* the attention products count 0 (ViT-B/32 would show 5.9 GFLOPs instead of
  8.8). We turn the fast path off while counting (``torch.backends.mha.set_fastpath_enabled``).
* ``F.scaled_dot_product_attention`` on the CPU dispatches to a fused flash kernel that the counter
  reports as 0. We force the math backend (``SDPBackend.MATH``), which decomposes into counted
  ``bmm`` calls.

Timing is never taken inside :func:`counting`: the math backend and the slow MHA path are slower.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["FlopCount", "counting", "count_flops"]


@dataclass
class FlopCount:
    total: int  # FLOPs (2 per multiply-add)
    by_op: dict[str, int] = field(default_factory=dict)  # operator name -> FLOPs

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    @property
    def macs(self) -> int:
        return self.total // 2

    def __add__(self, other: "FlopCount") -> "FlopCount":
        ops = dict(self.by_op)
        for k, v in other.by_op.items():
            ops[k] = ops.get(k, 0) + v
        return FlopCount(self.total + other.total, ops)

    def scaled(self, factor: float) -> "FlopCount":
        return FlopCount(int(round(self.total * factor)), {k: int(round(v * factor)) for k, v in self.by_op.items()})


@contextlib.contextmanager
def counting():
    """``no_grad`` + MHA fast path off + math SDPA backend, restored on exit."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mha = getattr(torch.backends, "mha", None)
    before = mha.get_fastpath_enabled() if mha is not None else None
    if mha is not None:
        mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(before)


def count_flops(fn: Callable, *args, **kwargs) -> FlopCount:
    """Run ``fn(*args, **kwargs)`` once under :func:`counting` and return what it cost."""
    from torch.utils.flop_counter import FlopCounterMode

    with counting():
        mode = FlopCounterMode(display=False)
        with mode:
            fn(*args, **kwargs)
    ops = {str(k).removeprefix("aten."): int(v) for k, v in mode.get_flop_counts().get("Global", {}).items()}
    return FlopCount(int(mode.get_total_flops()), ops)
