"""gatednorm's ops as ``torch.library`` custom ops, for ``torch.compile`` (``fullgraph=True``)
and ``torch.export``: ``import gatednorm.torch_ops`` (it needs torch; ``import gatednorm``
never imports it) registers

    torch.ops.gatednorm.rmsnorm_gated(x, z, weight, eps, norm_before_gate, activation,
                                      weight_offset, out_dtype) -> y
    torch.ops.gatednorm.rmsnorm_gated_fp8(x, z, weight, eps, norm_before_gate, activation,
                                          weight_offset, group_size, fp8_format, fp8_max,
                                          amax_floor, scale_format, scale_layout) -> (q, scales)
    torch.ops.gatednorm.rmsnorm(x, weight, eps, weight_offset, y_dtype) -> y
    torch.ops.gatednorm.add_rmsnorm(x, residual, weight, eps, weight_offset, y_dtype) -> y
        (residual updated in place: the op declares it mutated)
    torch.ops.gatednorm.group_quant_fp8(x, group_size, fp8_format, fp8_max, amax_floor,
                                        scale_format, scale_layout) -> (q, scales)

with the keyword defaults of the Python functions of the same names (docs/ops.md); each op
is the Python function, and its fake implementation allocates what the function allocates
(dtypes, shapes and the scale layouts' strides), so the compiler sees the op as one opaque
node (docs/frameworks.md).  No autograd (as the functions: docs/frameworks.md).  W4A16
(its weight is an object, not a tensor) and the all-reduce are not registered.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _dtypes, ops, ops_fp8

__all__ = ["rmsnorm_gated", "rmsnorm_gated_fp8", "rmsnorm", "add_rmsnorm", "group_quant_fp8"]

_LIB = "gatednorm"
Tensor = torch.Tensor


def _fake_quant(x, tok, row, group_size, fp8_format, scale_format, scale_layout):
    """What ops_fp8 allocates for q and scales (its own _new_scales, so the same strides)."""
    fmt = ops_fp8.FP8_FORMATS[fp8_format]
    sfmt = ops_fp8.SCALE_FORMATS[scale_format]
    q = x.new_empty(tuple(tok) + (row,), dtype=_dtypes.to_torch_dtype(torch, getattr(_dtypes, ops_fp8._Q_NAMES[fmt])))
    k = row // group_size if group_size > 0 else 0
    cols = (k + 3) // 4 if sfmt == 3 else k
    scales = ops_fp8._new_scales(x, tuple(tok), cols, getattr(_dtypes, ops_fp8._SCALE_NAMES[sfmt]), scale_layout)
    return q, scales


@torch.library.custom_op(_LIB + "::rmsnorm_gated", mutates_args=())
def rmsnorm_gated(x: Tensor, z: Optional[Tensor], weight: Tensor, eps: float = 1e-6, norm_before_gate: bool = True,
                  activation: str = "silu", weight_offset: float = 0.0, out_dtype: Optional[torch.dtype] = None) -> Tensor:
    return ops.rmsnorm_gated(x, z, weight, eps=eps, norm_before_gate=norm_before_gate, activation=activation,
                             weight_offset=weight_offset, out_dtype=out_dtype)


@rmsnorm_gated.register_fake
def _(x, z, weight, eps=1e-6, norm_before_gate=True, activation="silu", weight_offset=0.0, out_dtype=None):
    return x.new_empty(x.shape, dtype=out_dtype or x.dtype)


@torch.library.custom_op(_LIB + "::rmsnorm_gated_fp8", mutates_args=())
def rmsnorm_gated_fp8(x: Tensor, z: Optional[Tensor], weight: Tensor, eps: float = 1e-6, norm_before_gate: bool = True,
                      activation: str = "silu", weight_offset: float = 0.0, group_size: int = 128,
                      fp8_format: str = "e4m3fn", fp8_max: Optional[float] = None, amax_floor: float = 1e-10,
                      scale_format: str = "fp32", scale_layout: str = "row") -> tuple[Tensor, Tensor]:
    q, s = ops_fp8.rmsnorm_gated_fp8(x, z, weight, eps=eps, norm_before_gate=norm_before_gate, activation=activation,
                                     weight_offset=weight_offset, group_size=group_size, fp8_format=fp8_format,
                                     fp8_max=fp8_max, amax_floor=amax_floor, scale_format=scale_format,
                                     scale_layout=scale_layout)
    return q, s


@rmsnorm_gated_fp8.register_fake
def _(x, z, weight, eps=1e-6, norm_before_gate=True, activation="silu", weight_offset=0.0, group_size=128,
      fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32", scale_layout="row"):
    tok, row = ops_fp8._token_dims(tuple(x.shape), 0)
    return _fake_quant(x, tok, row, group_size, fp8_format, scale_format, scale_layout)


@torch.library.custom_op(_LIB + "::rmsnorm", mutates_args=())
def rmsnorm(x: Tensor, weight: Tensor, eps: float = 1e-6, weight_offset: float = 0.0,
            y_dtype: Optional[torch.dtype] = None) -> Tensor:
    return ops_fp8.rmsnorm(x, weight, eps=eps, weight_offset=weight_offset, y_dtype=y_dtype).y


@rmsnorm.register_fake
def _(x, weight, eps=1e-6, weight_offset=0.0, y_dtype=None):
    return x.new_empty(x.shape, dtype=y_dtype or x.dtype)


@torch.library.custom_op(_LIB + "::add_rmsnorm", mutates_args=("residual",))
def add_rmsnorm(x: Tensor, residual: Tensor, weight: Tensor, eps: float = 1e-6, weight_offset: float = 0.0,
                y_dtype: Optional[torch.dtype] = None) -> Tensor:
    return ops_fp8.add_rmsnorm(x, residual, weight, eps=eps, weight_offset=weight_offset, y_dtype=y_dtype).y


@add_rmsnorm.register_fake
def _(x, residual, weight, eps=1e-6, weight_offset=0.0, y_dtype=None):
    return x.new_empty(x.shape, dtype=y_dtype or x.dtype)


@torch.library.custom_op(_LIB + "::group_quant_fp8", mutates_args=())
def group_quant_fp8(x: Tensor, group_size: int = 128, fp8_format: str = "e4m3fn", fp8_max: Optional[float] = None,
                    amax_floor: float = 1e-10, scale_format: str = "fp32", scale_layout: str = "row") -> tuple[Tensor, Tensor]:
    return ops_fp8.group_quant_fp8(x, group_size=group_size, fp8_format=fp8_format, fp8_max=fp8_max,
                                   amax_floor=amax_floor, scale_format=scale_format, scale_layout=scale_layout)


@group_quant_fp8.register_fake
def _(x, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32", scale_layout="row"):
    shape = tuple(x.shape)
    return _fake_quant(x, shape[:-1], shape[-1] if shape else 0, group_size, fp8_format, scale_format, scale_layout)
