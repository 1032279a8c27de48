"""gatednorm's ops as ``torch.library`` custom ops, for ``torch.compile`` (``fullgraph=True``)
and ``torch.export``: ``import gatednorm.torch_ops`` (it needs torch; ``import gatednorm``
never imports it) registers

    torch.ops.gatednorm.rmsnorm_gated(x, z, weight, eps, norm_before_gate, activation,
                                      weight_offset, group_size, out_dtype) -> y
    torch.ops.gatednorm.rmsnorm_gated_fp8(x, z, weight, eps, norm_before_gate, activation,
                                          weight_offset, group_size, fp8_format, fp8_max,
                                          amax_floor, scale_format, scale_layout,
                                          quantize_rounded, head_dim) -> (q, scales)
    torch.ops.gatednorm.rmsnorm_gated_fp8_copy(... as rmsnorm_gated_fp8 ..., copy_dtype)
                                          -> (q, scales, y)
    torch.ops.gatednorm.rmsnorm(x, weight, eps, weight_offset, y_dtype) -> y
    torch.ops.gatednorm.add_rmsnorm(x, residual, weight, eps, weight_offset, y_dtype) -> y
    torch.ops.gatednorm.rmsnorm_fp8(x, weight, eps, weight_offset, group_size, fp8_format,
                                    fp8_max, amax_floor, scale_format, scale_layout,
                                    quantize_rounded) -> (q, scales)
    torch.ops.gatednorm.rmsnorm_fp8_copy(... as rmsnorm_fp8 ..., y_dtype) -> (y, q, scales)
    torch.ops.gatednorm.add_rmsnorm_fp8(x, residual, weight, ... as rmsnorm_fp8 ...) -> (q, scales)
    torch.ops.gatednorm.add_rmsnorm_fp8_copy(... as add_rmsnorm_fp8 ..., y_dtype) -> (y, q, scales)
    torch.ops.gatednorm.group_quant_fp8(x, group_size, fp8_format, fp8_max, amax_floor,
                                        scale_format, scale_layout) -> (q, scales)
    torch.ops.gatednorm.w4a16_matmul(a, qweight, scales, zeros, perm, meta, bias, out_dtype) -> out
        (the weight's parts from w4a16_args(w), below; W4A16Linear(w, bias) is the module)
    torch.ops.gatednorm.allreduce_add_rmsnorm(x, residual, weight, group, eps, weight_offset, y_dtype) -> y
    torch.ops.gatednorm.allreduce_add_rmsnorm_fp8(... as add_rmsnorm_fp8, group after weight) -> (q, scales)
    torch.ops.gatednorm.allreduce_add_rmsnorm_fp8_copy(..., y_dtype) -> (y, q, scales)
        (AllReduceGroup.add_rmsnorm; group: the int group_handle(g) gives, below)

with the keyword defaults of the Python functions they call (docs/ops.md); the add_rmsnorm
ops update ``residual`` in place and declare it mutated.  An op's outputs are fixed by its
name (a custom op's schema cannot return an optional tensor), so each combination of outputs
the Python functions make from one call is its own op, returning what the function returns
in the function's order: ``rmsnorm_gated_fp8(copy_dtype=...)`` is ``(q, scales, y)``,
``add_rmsnorm(fp8=True)`` is ``NormOutputs(y, q, scales, ...)``.  Each op is the Python
function, and its fake implementation allocates what the function allocates (dtypes, shapes,
symbolic token counts and the scale layouts' strides: the wrappers' own allocation code), so
the compiler sees the op as one opaque node (docs/frameworks.md).  No autograd, as the
functions: the outputs are marked non-differentiable (a weight that is an nn.Parameter
compiles), and the ops that mutate a residual refuse one that requires grad under grad mode.
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import Optional

import numpy as np
import torch

from . import _dtypes, ops, ops_fp8
from ._ffi import argument_error

__all__ = ["rmsnorm_gated", "rmsnorm_gated_fp8", "rmsnorm_gated_fp8_copy", "rmsnorm", "add_rmsnorm", "rmsnorm_fp8",
           "rmsnorm_fp8_copy", "add_rmsnorm_fp8", "add_rmsnorm_fp8_copy", "group_quant_fp8",
           "w4a16_matmul", "w4a16_args", "W4A16Linear", "allreduce_add_rmsnorm", "allreduce_add_rmsnorm_fp8",
           "allreduce_add_rmsnorm_fp8_copy", "group_handle"]

_LIB = "gatednorm"
Tensor = torch.Tensor


def _concrete(v):
    """An int option as a Python int: under torch.compile an int argument that changes between
    calls (a group size, a W4A16 weight's meta) reaches a fake as a symbolic int, which the
    options' checks and caches cannot take; int() specializes on it (one graph a value, as the
    options of every other op are compiled in)."""
    return v if v is None or type(v) is int else int(v)


def _fake_quant(x, dims, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, head=None):
    """q and scales as the wrapper allocates them (its own code: the same dtypes, shapes and
    strides; sizes may be symbolic), its options checked by its own rule, and the group size
    checked as the C entry checks it (a trace then fails where the call would): >= 1, dividing
    the row, and dividing the gated ops' head dim ``head`` or a multiple of it.  A group size
    below 1 or off the head dim once passed here (scales of no columns for G <= 0): compiled
    and exported programs that failed at every run (review)."""
    _, fmt, sfmt, g = ops_fp8._quant_fields(_concrete(group_size), fp8_format, fp8_max, amax_floor, scale_format,
                                            scale_layout, False)
    if dims is None:
        dims = (tuple(x.shape[:-1]), x.shape[-1]) if x.dim() else ((), 0)
    if g < 1:
        raise argument_error("group_size: expected >= 1, got %d" % g)
    if head is not None and head % g != 0 and g % head != 0:
        raise argument_error("group_size: %d must divide head_dim %s or be a multiple of it" % (g, head))
    if dims[1] % g != 0:
        raise argument_error("group_size: %d does not divide the row's %s elements" % (g, dims[1]))
    return ops_fp8._new_quant(x, None, None, fmt, sfmt, g, scale_layout, dims)


def _fake_gated_quant(x, head_dim, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout):
    # rmsnorm_gated_fp8's q and scales: its token dims, and its head dim D (head_dim where
    # given, else x's last dim), which the group size must divide or be a multiple of
    hd = _concrete(head_dim)
    return _fake_quant(x, ops_fp8._token_dims(x.shape, hd), group_size, fp8_format, fp8_max, amax_floor, scale_format,
                       scale_layout, (hd or x.shape[-1]) if x.dim() else None)


def _fake_16(x, dtype, name="y_dtype"):
    # A bf16 / fp16 / fp32 output shaped as x (y, a copy), its dtype checked as the wrapper does.
    dt = ops_fp8._float_out_dtype(dtype, name, "the output", None, None) if dtype is not None else None
    return x.new_empty(x.shape, dtype=x.dtype if dt is None else dtype)


# ------------------------------------------------------------ gated RMSNorm (docs/ops.md §1, §2)
@torch.library.custom_op(_LIB + "::rmsnorm_gated", mutates_args=())
def rmsnorm_gated(x: Tensor, z: Optional[Tensor], weight: Tensor, eps: float = 1e-6, norm_before_gate: bool = True,
                  activation: str = "silu", weight_offset: float = 0.0, group_size: Optional[int] = None,
                  out_dtype: Optional[torch.dtype] = None) -> Tensor:
    return ops.rmsnorm_gated(x, z, weight, eps=eps, norm_before_gate=norm_before_gate, activation=activation,
                             weight_offset=weight_offset, group_size=group_size, out_dtype=out_dtype)


@rmsnorm_gated.register_fake
def _(x, z, weight, eps=1e-6, norm_before_gate=True, activation="silu", weight_offset=0.0, group_size=None,
      out_dtype=None):
    return _fake_16(x, out_dtype, "out_dtype")


@torch.library.custom_op(_LIB + "::rmsnorm_gated_fp8", mutates_args=())
def rmsnorm_gated_fp8(x: Tensor, z: Optional[Tensor], weight: Tensor, eps: float = 1e-6, norm_before_gate: bool = True,
                      activation: str = "silu", weight_offset: float = 0.0, group_size: int = 128,
                      fp8_format: str = "e4m3fn", fp8_max: Optional[float] = None, amax_floor: float = 1e-10,
                      scale_format: str = "fp32", scale_layout: str = "row", quantize_rounded: bool = False,
                      head_dim: Optional[int] = None) -> tuple[Tensor, Tensor]:
    q, s = ops_fp8.rmsnorm_gated_fp8(x, z, weight, eps=eps, norm_before_gate=norm_before_gate, activation=activation,
                                     weight_offset=weight_offset, group_size=group_size, fp8_format=fp8_format,
                                     fp8_max=fp8_max, amax_floor=amax_floor, scale_format=scale_format,
                                     scale_layout=scale_layout, quantize_rounded=quantize_rounded, head_dim=head_dim)
    return q, s


@rmsnorm_gated_fp8.register_fake
def _(x, z, weight, eps=1e-6, norm_before_gate=True, activation="silu", weight_offset=0.0, group_size=128,
      fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32", scale_layout="row",
      quantize_rounded=False, head_dim=None):
    return _fake_gated_quant(x, head_dim, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout)


@torch.library.custom_op(_LIB + "::rmsnorm_gated_fp8_copy", mutates_args=())
def rmsnorm_gated_fp8_copy(x: Tensor, z: Optional[Tensor], weight: Tensor, eps: float = 1e-6,
                           norm_before_gate: bool = True, activation: str = "silu", weight_offset: float = 0.0,
                           group_size: int = 128, fp8_format: str = "e4m3fn", fp8_max: Optional[float] = None,
                           amax_floor: float = 1e-10, scale_format: str = "fp32", scale_layout: str = "row",
                           quantize_rounded: bool = False, head_dim: Optional[int] = None,
                           copy_dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor, Tensor]:
    # copy_dtype None: x's dtype (as the norms' y_dtype; the function's None means "no copy")
    q, s, y = ops_fp8.rmsnorm_gated_fp8(x, z, weight, eps=eps, norm_before_gate=norm_before_gate,
                                        activation=activation, weight_offset=weight_offset, group_size=group_size,
                                        fp8_format=fp8_format, fp8_max=fp8_max, amax_floor=amax_floor,
                                        scale_format=scale_format, scale_layout=scale_layout,
                                        quantize_rounded=quantize_rounded, head_dim=head_dim,
                                        copy_dtype=x.dtype if copy_dtype is None else copy_dtype)
    return q, s, y


@rmsnorm_gated_fp8_copy.register_fake
def _(x, z, weight, eps=1e-6, norm_before_gate=True, activation="silu", weight_offset=0.0, group_size=128,
      fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32", scale_layout="row",
      quantize_rounded=False, head_dim=None, copy_dtype=None):
    y = _fake_16(x, copy_dtype, "copy_dtype")
    q, s = _fake_gated_quant(x, head_dim, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout)
    return q, s, y


# ------------------------------------------------------------ RMSNorm / add-RMSNorm (§3)
@torch.library.custom_op(_LIB + "::rmsnorm", mutates_args=())
def rmsnorm(x: Tensor, weight: Tensor, eps: float = 1e-6, weight_offset: float = 0.0,
            y_dtype: Optional[torch.dtype] = None) -> Tensor:
    return ops_fp8.rmsnorm(x, weight, eps=eps, weight_offset=weight_offset, y_dtype=y_dtype).y


@rmsnorm.register_fake
def _(x, weight, eps=1e-6, weight_offset=0.0, y_dtype=None):
    return _fake_16(x, y_dtype)


def _span(t):
    """[first, last) byte addresses tensor t's elements can touch (empty: None)."""
    if t.numel() == 0:
        return None
    size = t.element_size()
    lo = hi = t.data_ptr()
    for n, st in zip(t.shape, t.stride()):
        if st < 0:
            lo += (n - 1) * st * size
        else:
            hi += (n - 1) * st * size
    return lo, hi + size


def _unaliased(t, residual):
    """t (x or the weight), or a copy of it where its memory meets residual's.  An op's
    arguments are values: add_rmsnorm(r, r, w) is r + r, stored in r.  The function refuses
    the overlap (it would read what it writes); compiled, whether t arrives as r itself
    depends on the backend (aot_eager passes a copy, inductor's reinplacing r), so the op
    makes the copy itself and every mode computes the same.  By address ranges, not storage
    identity: two storages over one buffer (from_numpy of two slices) met unseen, and the
    weight was not checked at all (review)."""
    a, b = _span(t), _span(residual)
    if a is not None and b is not None and a[0] < b[1] and b[0] < a[1]:
        return t.clone()
    return t


@torch.library.custom_op(_LIB + "::add_rmsnorm", mutates_args=("residual",))
def add_rmsnorm(x: Tensor, residual: Tensor, weight: Tensor, eps: float = 1e-6, weight_offset: float = 0.0,
                y_dtype: Optional[torch.dtype] = None) -> Tensor:
    return ops_fp8.add_rmsnorm(_unaliased(x, residual), residual, _unaliased(weight, residual), eps=eps,
                               weight_offset=weight_offset, y_dtype=y_dtype).y


@add_rmsnorm.register_fake
def _(x, residual, weight, eps=1e-6, weight_offset=0.0, y_dtype=None):
    return _fake_16(x, y_dtype)


def _norm_fp8(x, residual, weight, eps, weight_offset, group_size, fp8_format, fp8_max, amax_floor, scale_format,
              scale_layout, quantize_rounded, y, y_dtype):
    # One call of the Python function with fp8=True (and y when asked): its NormOutputs.
    f = ops_fp8.rmsnorm if residual is None else ops_fp8.add_rmsnorm
    args = (x,) if residual is None else (_unaliased(x, residual), residual)
    weight = weight if residual is None else _unaliased(weight, residual)
    return f(*args, weight, eps=eps, weight_offset=weight_offset, y=y, y_dtype=y_dtype, fp8=True,
             group_size=group_size, fp8_format=fp8_format, fp8_max=fp8_max, amax_floor=amax_floor,
             scale_format=scale_format, scale_layout=scale_layout, quantize_rounded=quantize_rounded)


@torch.library.custom_op(_LIB + "::rmsnorm_fp8", mutates_args=())
def rmsnorm_fp8(x: Tensor, weight: Tensor, eps: float = 1e-6, weight_offset: float = 0.0, group_size: int = 128,
                fp8_format: str = "e4m3fn", fp8_max: Optional[float] = None, amax_floor: float = 1e-10,
                scale_format: str = "fp32", scale_layout: str = "row", quantize_rounded: bool = False
                ) -> tuple[Tensor, Tensor]:
    r = _norm_fp8(x, None, weight, eps, weight_offset, group_size, fp8_format, fp8_max, amax_floor, scale_format,
                  scale_layout, quantize_rounded, False, None)
    return r.q, r.scales


@torch.library.custom_op(_LIB + "::rmsnorm_fp8_copy", mutates_args=())
def rmsnorm_fp8_copy(x: Tensor, weight: Tensor, eps: float = 1e-6, weight_offset: float = 0.0, group_size: int = 128,
                     fp8_format: str = "e4m3fn", fp8_max: Optional[float] = None, amax_floor: float = 1e-10,
                     scale_format: str = "fp32", scale_layout: str = "row", quantize_rounded: bool = False,
                     y_dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor, Tensor]:
    r = _norm_fp8(x, None, weight, eps, weight_offset, group_size, fp8_format, fp8_max, amax_floor, scale_format,
                  scale_layout, quantize_rounded, True, y_dtype)
    return r.y, r.q, r.scales


@torch.library.custom_op(_LIB + "::add_rmsnorm_fp8", mutates_args=("residual",))
def add_rmsnorm_fp8(x: Tensor, residual: Tensor, weight: Tensor, eps: float = 1e-6, weight_offset: float = 0.0,
                    group_size: int = 128, fp8_format: str = "e4m3fn", fp8_max: Optional[float] = None,
                    amax_floor: float = 1e-10, scale_format: str = "fp32", scale_layout: str = "row",
                    quantize_rounded: bool = False) -> tuple[Tensor, Tensor]:
    r = _norm_fp8(x, residual, weight, eps, weight_offset, group_size, fp8_format, fp8_max, amax_floor, scale_format,
                  scale_layout, quantize_rounded, False, None)
    return r.q, r.scales


@torch.library.custom_op(_LIB + "::add_rmsnorm_fp8_copy", mutates_args=("residual",))
def add_rmsnorm_fp8_copy(x: Tensor, residual: Tensor, weight: Tensor, eps: float = 1e-6, weight_offset: float = 0.0,
                         group_size: int = 128, fp8_format: str = "e4m3fn", fp8_max: Optional[float] = None,
                         amax_floor: float = 1e-10, scale_format: str = "fp32", scale_layout: str = "row",
                         quantize_rounded: bool = False, y_dtype: Optional[torch.dtype] = None
                         ) -> tuple[Tensor, Tensor, Tensor]:
    r = _norm_fp8(x, residual, weight, eps, weight_offset, group_size, fp8_format, fp8_max, amax_floor, scale_format,
                  scale_layout, quantize_rounded, True, y_dtype)
    return r.y, r.q, r.scales


def _fake_norm_fp8(x, y_dtype, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, copy):
    """The norms' FP8 outputs as their ops return them: (q, scales), or (y, q, scales) with
    ``copy`` (every rmsnorm / add_rmsnorm / all-reduce FP8 op's fake)."""
    y = _fake_16(x, y_dtype) if copy else None  # y_dtype checked before the quant options
    q, s = _fake_quant(x, None, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout)
    return (y, q, s) if copy else (q, s)


@rmsnorm_fp8.register_fake
def _(x, weight, eps=1e-6, weight_offset=0.0, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10,
      scale_format="fp32", scale_layout="row", quantize_rounded=False):
    return _fake_norm_fp8(x, None, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, False)


@rmsnorm_fp8_copy.register_fake
def _(x, weight, eps=1e-6, weight_offset=0.0, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10,
      scale_format="fp32", scale_layout="row", quantize_rounded=False, y_dtype=None):
    return _fake_norm_fp8(x, y_dtype, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, True)


@add_rmsnorm_fp8.register_fake
def _(x, residual, weight, eps=1e-6, weight_offset=0.0, group_size=128, fp8_format="e4m3fn", fp8_max=None,
      amax_floor=1e-10, scale_format="fp32", scale_layout="row", quantize_rounded=False):
    return _fake_norm_fp8(x, None, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, False)


@add_rmsnorm_fp8_copy.register_fake
def _(x, residual, weight, eps=1e-6, weight_offset=0.0, group_size=128, fp8_format="e4m3fn", fp8_max=None,
      amax_floor=1e-10, scale_format="fp32", scale_layout="row", quantize_rounded=False, y_dtype=None):
    return _fake_norm_fp8(x, y_dtype, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, True)


# ------------------------------------------------------------ group quant (§3)
@torch.library.custom_op(_LIB + "::group_quant_fp8", mutates_args=())
def group_quant_fp8(x: Tensor, group_size: int = 128, fp8_format: str = "e4m3fn", fp8_max: Optional[float] = None,
                    amax_floor: float = 1e-10, scale_format: str = "fp32", scale_layout: str = "row") -> tuple[Tensor, Tensor]:
    return ops_fp8.group_quant_fp8(x, group_size=group_size, fp8_format=fp8_format, fp8_max=fp8_max,
                                   amax_floor=amax_floor, scale_format=scale_format, scale_layout=scale_layout)


@group_quant_fp8.register_fake
def _(x, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32", scale_layout="row"):
    return _fake_quant(x, None, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout)


# ------------------------------------------------------------ W4A16 (§4)
# A custom op's arguments are tensors and scalars, so the op takes a W4A16Weight as the C
# GEMM does: its (qweight, scales, zeros) in its layout and its params as eight ints
# (w4a16.META_FIELDS).  w4a16_args makes both from a weight.
def w4a16_args(w) -> tuple:
    """``(qweight, scales, zeros, perm, meta)`` for ``torch.ops.gatednorm.w4a16_matmul(a, *args,
    bias=None, out_dtype=None)`` from a ``gatednorm.W4A16Weight``: torch tensors on the
    weight's device (a GPU weight's tiled buffer shared, not copied; a host weight's arrays
    copied), None where the weight has none (zeros of a symmetric weight, perm unless
    act-order; scales and zeros of a tiled weight), and ``meta``, the weight's params as ints.
    Keep them (module buffers, say) for the weight's life."""
    from . import w4a16

    if not isinstance(w, w4a16.W4A16Weight):
        raise argument_error("w: expected a gatednorm.W4A16Weight, got %s" % type(w).__name__)
    meta = list(w4a16.weight_meta(w))
    if w._packed is None:
        qweight, scales, zeros = (None if a is None else _host_tensor(a) for a in (w.q, w.scales, w.zeros))
        device = "cpu"
    else:
        packed = w._packed
        qweight = _host_tensor(packed) if isinstance(packed, np.ndarray) else torch.from_dlpack(packed)
        scales = zeros = None
        device = qweight.device
    perm = None if w.perm is None else torch.tensor(w.perm, dtype=torch.int64, device=device)
    return qweight, scales, zeros, perm, meta


def _host_tensor(a):
    # A torch copy of a host array (the weight's are read-only, which torch would warn of).
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def _w4a16_params(meta):
    from .w4a16 import params_from_meta
    return params_from_meta(meta, _concrete)


@torch.library.custom_op(_LIB + "::w4a16_matmul", mutates_args=())
def w4a16_matmul(a: Tensor, qweight: Tensor, scales: Optional[Tensor], zeros: Optional[Tensor], perm: Optional[Tensor],
                 meta: list[int], bias: Optional[Tensor] = None, out_dtype: Optional[torch.dtype] = None) -> Tensor:
    from . import w4a16

    prm = _w4a16_params(meta)
    odt = ops_fp8._float_out_dtype(out_dtype, "out_dtype", "the output", None, None)
    if perm is not None:  # act-order: a's columns in the weight's order, as gatednorm.w4a16_matmul does
        if a.dim() != 2 or a.shape[1] != prm.k:
            raise argument_error("a: expected [M, K] with K = %d (the weight's), got shape %s" % (prm.k, tuple(a.shape)))
        a = a.index_select(1, perm)
    return w4a16.gemm(a, a, prm.n, (qweight, scales, zeros), prm, bias, None, odt, None, None)


@w4a16_matmul.register_fake
def _(a, qweight, scales, zeros, perm, meta, bias=None, out_dtype=None):
    # The checks that fix the output's shape and dtype, so a trace fails where the call would.
    prm = _w4a16_params(meta)
    if a.dim() != 2 or a.shape[1] != prm.k:
        raise argument_error("a: expected [M, K] with K = %d (the weight's), got shape %s" % (prm.k, tuple(a.shape)))
    if a.dtype not in (torch.bfloat16, torch.float16):
        raise argument_error("a: dtype %s; activations are bf16 or fp16" % a.dtype)
    # a tiled weight is prepacked for one activation dtype (meta's dtype: 1 bf16, 2 fp16; 0 any),
    # which the call holds a to (review: the fake took the other, a trace passing every call refused)
    from . import w4a16
    want = next((getattr(torch, n) for n, code in w4a16._W4DT_NAMES.items() if code == prm.dtype), None)
    if want is not None and a.dtype != want:
        raise argument_error("a: dtype %s, but the weight (meta[5], dtype) is for %s activations"
                             % (str(a.dtype)[6:], str(want)[6:]))
    if out_dtype is not None:
        ops_fp8._float_out_dtype(out_dtype, "out_dtype", "the output", None, None)
    return a.new_empty((a.shape[0], prm.n), dtype=out_dtype or a.dtype)


# message -> a function failing torch.compile's trace with it (_compiled_refusal).  This
# module's registries (this one, the group handles below) are kept across
# importlib.reload (IPython's autoreload): objects made before a reload still name what they
# registered (review: a reload emptied them; a W4A16Linear's compiled refusal failed on a
# KeyError, and the restarted handle counter gave a new group a live group's handle).
_REFUSALS: dict = globals().get("_REFUSALS", {})


def _compiled_refusal(message: str) -> None:
    """Makes ``_REFUSALS[message]``: a function calling torch._check(False, ...) with
    ``message``.  Dynamo takes the message only from a lambda written in the traced code with
    no closure (torch 2.9-2.10 refuse ``lambda: msg``: "Can't extract message from
    torch._check()"), so the message is written into the lambda as a literal.  Kept here, not
    on the module, which must pickle (torch.save)."""
    if message not in _REFUSALS:
        env = {"torch": torch}
        exec("def refuse():\n    torch._check(False, lambda: %r)\n" % (message,), env)
        _REFUSALS[message] = env["refuse"]


def _rejudge_loaded_scales(module, incompatible_keys):
    """W4A16Linear's load_state_dict post hook: the fits judged on the loaded scales (a plain
    weight's; a tiled buffer carries the scales its prepack checked)."""
    if module.scales is None:
        return
    s = module.scales.detach().cpu()
    scales = s.view(torch.int16).numpy().view(_dtypes.to_numpy_dtype(s.dtype)) if s.dtype == torch.bfloat16 else s.numpy()
    zeros = None if module.zeros is None else module.zeros.detach().cpu().numpy()
    module._judge_scales(module.qweight.detach().cpu().numpy(), scales, zeros)


class W4A16Linear(torch.nn.Module):
    """``nn.Linear``'s forward over a W4A16Weight: ``y = x @ dequant(W)^T (+ bias)`` for x
    ``[..., K]`` bf16 / fp16 (leading dims flattened into M for the call and restored), through
    the ``w4a16_matmul`` custom op, so it compiles and exports.  The weight's parts are the
    module's buffers (``w4a16_args``; a GPU weight's tiled buffer shared, not copied), its
    meta a plain attribute: ``state_dict`` holds the buffers, and loading one needs a module
    made from a weight of the same shape, layout and device."""

    def __init__(self, weight, bias=None):
        super().__init__()
        qweight, scales, zeros, perm, self.meta = w4a16_args(weight)
        self.in_features, self.out_features = weight.k, weight.n
        for name, t in (("qweight", qweight), ("scales", scales), ("zeros", zeros), ("perm", perm), ("bias", bias)):
            self.register_buffer(name, t)
        # The activation dtypes the scales fit, judged here on the weight (w4a16_matmul's check;
        # the op over raw parts has none: a scale past fp16's range gave NaN outputs; review),
        # and again on a plain weight's scales when a state dict is loaded (a review: loaded
        # scales that overflow fp16 gave NaN outputs, judged on the scales made with).
        self._judge_scales(weight.q, weight.scales, weight.zeros)
        self.register_load_state_dict_post_hook(_rejudge_loaded_scales)

    def _judge_scales(self, q, scales, zeros):
        from .w4a16 import scales_overflow

        fits = {dt: scales_overflow(q, scales, zeros, _dtypes.to_numpy_dtype(dt)) for dt in (torch.bfloat16, torch.float16)}
        for err in fits.values():
            if err is not None:
                _compiled_refusal(err.message)
        self._fits = fits  # whole or not at all: a failed judgement keeps the last one

    def _apply(self, fn, *args, **kwargs):
        # A cast of the module (.half(), .to(torch.bfloat16)) casts the scales buffer too: the
        # fits judged again on the scales it leaves (review: .half() made scales past fp16's
        # range inf, and bf16 activations, judged fit on the scales made with, gave NaN).  A
        # move that keeps their dtype judges nothing anew (no host copy of the weight).
        dt = None if self.scales is None else self.scales.dtype
        module = super()._apply(fn, *args, **kwargs)
        if self.scales is not None and self.scales.dtype != dt:
            _rejudge_loaded_scales(self, None)
        return module

    def __setstate__(self, state):  # unpickled in another process: its refusals made again
        super().__setstate__(state)
        for e in self._fits.values():
            if e is not None:
                _compiled_refusal(e.message)

    def forward(self, x):
        err = self._fits.get(x.dtype)  # x's dtype is static under compile: no graph break
        if err is not None:
            if torch.compiler.is_compiling():  # dynamo cannot trace a raise; torch._check can
                _REFUSALS[err.message]()
            raise copy.copy(err)  # a fresh one each call: a raised error keeps its traceback
        lead = x.shape[:-1]
        y = torch.ops.gatednorm.w4a16_matmul(x.reshape(-1, self.in_features), self.qweight, self.scales, self.zeros,
                                             self.perm, self.meta, self.bias)
        return y.view(*lead, self.out_features)

    def extra_repr(self):
        return "in_features=%d, out_features=%d, group_size=%d, bias=%s" % (
            self.in_features, self.out_features, self.meta[3], self.bias is not None)


# ------------------------------------------------------------ all-reduce + add-RMSNorm (§5)
# A custom op takes no Python object, so an AllReduceGroup is named by a handle: an int that
# group_handle gives each group once (a counter, never reused: an id() could name a later
# group after the first was collected), resolved at each call while the group lives.
_GROUPS: dict = globals().get("_GROUPS", {})  # kept across a reload, as _REFUSALS (above)
_NEXT_HANDLE = globals().get("_NEXT_HANDLE", [1])
# lookup-or-assign is one step: one handle a group, none shared
_HANDLES_LOCK = globals().get("_HANDLES_LOCK") or threading.Lock()


def group_handle(group) -> int:
    """The int that names AllReduceGroup ``group`` in the allreduce_add_rmsnorm ops (the same
    int every time for one group; it stops naming it once the group is collected)."""
    from .allreduce import AllReduceGroup

    if not isinstance(group, AllReduceGroup):
        raise argument_error("group: expected a gatednorm.AllReduceGroup, got %s" % type(group).__name__)
    with _HANDLES_LOCK:
        h = group.__dict__.get("_torch_handle")
        if h is None:
            h = group._torch_handle = _NEXT_HANDLE[0]
            _NEXT_HANDLE[0] += 1
            _GROUPS[h] = weakref.ref(group, lambda _, h=h: _GROUPS.pop(h, None))
    return h


def _group(handle):
    ref = _GROUPS.get(_concrete(handle))
    g = None if ref is None else ref()
    if g is None:
        raise argument_error("group: %r names no live AllReduceGroup (gatednorm.torch_ops.group_handle(g) makes "
                             "the handle; it ends with the group)" % (handle,))
    return g


def _allreduce_norm(x, residual, weight, group, eps, weight_offset, fp8, y, y_dtype, group_size=128, fp8_format="e4m3fn",
                    fp8_max=None, amax_floor=1e-10, scale_format="fp32", scale_layout="row", quantize_rounded=False):
    g = _group(group)
    try:
        x, weight = _unaliased(x, residual), _unaliased(weight, residual)
    except BaseException:
        g._count_refused()  # refused before add_rmsnorm (even by KeyboardInterrupt): counted as its own refusals are
        raise
    return g.add_rmsnorm(x, residual, weight, eps=eps, weight_offset=weight_offset, y=y, y_dtype=y_dtype, fp8=fp8,
                         group_size=group_size, fp8_format=fp8_format, fp8_max=fp8_max, amax_floor=amax_floor,
                         scale_format=scale_format, scale_layout=scale_layout, quantize_rounded=quantize_rounded)


@torch.library.custom_op(_LIB + "::allreduce_add_rmsnorm", mutates_args=("residual",))
def allreduce_add_rmsnorm(x: Tensor, residual: Tensor, weight: Tensor, group: int, eps: float = 1e-6,
                          weight_offset: float = 0.0, y_dtype: Optional[torch.dtype] = None) -> Tensor:
    return _allreduce_norm(x, residual, weight, group, eps, weight_offset, False, True, y_dtype).y


@torch.library.custom_op(_LIB + "::allreduce_add_rmsnorm_fp8", mutates_args=("residual",))
def allreduce_add_rmsnorm_fp8(x: Tensor, residual: Tensor, weight: Tensor, group: int, eps: float = 1e-6,
                              weight_offset: float = 0.0, group_size: int = 128, fp8_format: str = "e4m3fn",
                              fp8_max: Optional[float] = None, amax_floor: float = 1e-10, scale_format: str = "fp32",
                              scale_layout: str = "row", quantize_rounded: bool = False) -> tuple[Tensor, Tensor]:
    r = _allreduce_norm(x, residual, weight, group, eps, weight_offset, True, False, None, group_size, fp8_format,
                        fp8_max, amax_floor, scale_format, scale_layout, quantize_rounded)
    return r.q, r.scales


@torch.library.custom_op(_LIB + "::allreduce_add_rmsnorm_fp8_copy", mutates_args=("residual",))
def allreduce_add_rmsnorm_fp8_copy(x: Tensor, residual: Tensor, weight: Tensor, group: int, eps: float = 1e-6,
                                   weight_offset: float = 0.0, group_size: int = 128, fp8_format: str = "e4m3fn",
                                   fp8_max: Optional[float] = None, amax_floor: float = 1e-10,
                                   scale_format: str = "fp32", scale_layout: str = "row",
                                   quantize_rounded: bool = False, y_dtype: Optional[torch.dtype] = None
                                   ) -> tuple[Tensor, Tensor, Tensor]:
    r = _allreduce_norm(x, residual, weight, group, eps, weight_offset, True, True, y_dtype, group_size, fp8_format,
                        fp8_max, amax_floor, scale_format, scale_layout, quantize_rounded)
    return r.y, r.q, r.scales


# Collectives: a compiled graph must make every call the eager program makes, even one whose
# results go unused (dead-code elimination dropped such calls on the ranks that compiled,
# pairing their next call with the peers' current one; review).
for _name in ("allreduce_add_rmsnorm", "allreduce_add_rmsnorm_fp8", "allreduce_add_rmsnorm_fp8_copy"):
    try:  # torch.fx's registry of side-effectful ops (torch 2.x)
        torch.fx.node.has_side_effect(getattr(torch.ops.gatednorm, _name).default)
    except AttributeError:  # pragma: no cover - another torch
        pass


@allreduce_add_rmsnorm.register_fake
def _(x, residual, weight, group, eps=1e-6, weight_offset=0.0, y_dtype=None):
    _group(group)
    return _fake_16(x, y_dtype)


@allreduce_add_rmsnorm_fp8.register_fake
def _(x, residual, weight, group, eps=1e-6, weight_offset=0.0, group_size=128, fp8_format="e4m3fn", fp8_max=None,
      amax_floor=1e-10, scale_format="fp32", scale_layout="row", quantize_rounded=False):
    _group(group)
    return _fake_norm_fp8(x, None, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, False)


@allreduce_add_rmsnorm_fp8_copy.register_fake
def _(x, residual, weight, group, eps=1e-6, weight_offset=0.0, group_size=128, fp8_format="e4m3fn", fp8_max=None,
      amax_floor=1e-10, scale_format="fp32", scale_layout="row", quantize_rounded=False, y_dtype=None):
    _group(group)
    return _fake_norm_fp8(x, y_dtype, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, True)


# ------------------------------------------------------------ autograd: none, as the functions
def _no_grad_setup(ctx, inputs, output):
    # As the functions: the outputs never require grad (so AOTAutograd traces no backward).
    ctx.mark_non_differentiable(*(output if isinstance(output, tuple) else (output,)))


def _no_backward(ctx, *grads):
    raise RuntimeError("gatednorm ops record no autograd")


for _op in (rmsnorm_gated, rmsnorm_gated_fp8, rmsnorm_gated_fp8_copy, rmsnorm, rmsnorm_fp8, rmsnorm_fp8_copy,
            group_quant_fp8, w4a16_matmul):  # ops that mutate a residual: register_autograd refuses them (below)
    _op.register_autograd(_no_backward, setup_context=_no_grad_setup)


def _refusing_autograd(name):
    """An Autograd kernel for mutating op ``name`` (register_autograd refuses ops that mutate):
    it refuses what the function refuses (a residual that requires grad, with grad mode on)
    and otherwise runs the op below autograd, so its outputs need no grad.  An all-reduce op's
    refusal counts in its group, as AllReduceGroup.add_rmsnorm's own refusals do."""
    collective = name.startswith("allreduce_")

    def kernel(x, residual, *args, **kwargs):
        if torch.is_grad_enabled() and residual.requires_grad:
            if collective:
                _group(kwargs["group"] if "group" in kwargs else args[1])._count_refused()
            raise argument_error("residual: a tensor that requires grad, written with torch's grad mode on: "
                                 "gatednorm records no autograd; call it under torch.no_grad() or "
                                 "torch.inference_mode()")
        with _BELOW_AUTOGRAD():
            return getattr(torch.ops.gatednorm, name).default(x, residual, *args, **kwargs)
    return kernel


try:  # private hooks of torch 2.x; without them the default (an op that does not refuse) stays
    _BELOW_AUTOGRAD = torch._C._AutoDispatchBelowAutograd
    _IMPL = torch.library.Library(_LIB, "IMPL")
    for _name in ("add_rmsnorm", "add_rmsnorm_fp8", "add_rmsnorm_fp8_copy", "allreduce_add_rmsnorm",
                  "allreduce_add_rmsnorm_fp8", "allreduce_add_rmsnorm_fp8_copy"):
        _IMPL.impl(_name, _refusing_autograd(_name), "Autograd", allow_override=True)
except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - another torch
    pass
