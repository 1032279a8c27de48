"""Ops with FP8 per-group outputs (docs/ops.md §2, §3): ``rmsnorm_gated_fp8``, ``add_rmsnorm``,
``rmsnorm``, ``group_quant_fp8``."""

from __future__ import annotations

import collections
import math
import sys

import numpy as np

from . import _call, _dtypes
from ._array import DeviceArray, from_pointer
from ._ffi import argument_error

__all__ = ["rmsnorm_gated_fp8", "add_rmsnorm", "rmsnorm", "group_quant_fp8", "NormOutputs"]

_ACTIVATIONS = {"silu": 0, "swish": 0, "sigmoid": 1}
FP8_FORMATS = {"e4m3fn": 0, "e4m3fnuz": 1}
SCALE_FORMATS = {"fp32": 0, "ue8m0": 1, "e8m0": 2, "e8m0_packed": 3}
SCALE_LAYOUTS = ("row", "col", "col_pad4")
_SCALE_LAYOUT_KEYS = dict.fromkeys(SCALE_LAYOUTS)  # for _call.choice (a Python-side option: no C code)
_Q_NAMES = ("float8_e4m3fn", "float8_e4m3fnuz")  # through _dtypes on use: ml_dtypes loads lazily
_SCALE_NAMES = ("float32", "float32", "uint8", "int32")
# The wrappers' option defaults, one object each: their fast paths test the options by
# identity (an option passed explicitly, even with the default's value, takes the checks).
_ZERO, _G128, _E4M3FN, _AMAX_FLOOR, _FP32, _ROW, _SILU = 0.0, 128, "e4m3fn", 1e-10, "fp32", "row", "silu"
_ENTRY = _call.Entry("gatednorm_rmsnorm_gated_fp8", "gatednorm_rmsnorm_gated_fp8_params",
                     ("x", "z", "weight", "q", "scales", "y"), outputs=("q", "scales", "y"), c_names={"y_copy": "y"},
                     params_keywords=True)


# Checked options -> what the wrappers derive from them (params struct, codes), keyed by
# _call.options_key: a program calls with the same options every layer, and checking them
# costs more than the rest of a host call.  _NORM_OPTIONS serves every entry _norm is given
# (add_rmsnorm's and the all-reduce's): they read one params type, gatednorm_add_rmsnorm_params.
_GATED_OPTIONS: dict = {}
_NORM_OPTIONS: dict = {}
_GQ_OPTIONS: dict = {}
# The checked options of a call whose options are all defaults but eps, keyed on eps (and
# the entry): one lookup where the checks and options_key cost ~1-2 us a call (session 46).
# Entered (through _call.memo_put) only after the checks passed, for an eps > 0 (as ops.py's
# _eps_params: not NaN, and no 0.0 that -0.0 would find).
_GATED_DEFAULTS: dict = {}  # eps -> _GATED_OPTIONS' value
_NORM_DEFAULTS: dict = {}  # (entry, eps) -> _NORM_OPTIONS' value
_GQ_DEFAULTS: dict = {}  # None -> _GQ_OPTIONS' value (no eps: one entry, set directly)


def _quant_defaults(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, pdl):
    """Whether every FP8 option (and pdl) is its default object: the fast paths' common test."""
    return (group_size is _G128 and fp8_format is _E4M3FN and fp8_max is None and amax_floor is _AMAX_FLOOR
            and scale_format is _FP32 and scale_layout is _ROW and pdl is False)


def _gated_options(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, quantize_rounded, head_dim,
                   norm_before_gate, activation, eps, weight_offset, pdl):
    """rmsnorm_gated_fp8's options checked (in this order: the first bad one is named):
    (params, fp8 format code, scale format code, group size, head_dim)."""
    qf, fmt, sfmt, g = _quant_fields(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, quantize_rounded)
    hd = 0 if head_dim is None else _call.view_size("head_dim", head_dim)
    prm = _ENTRY.params(
        norm_before_gate=_call.flag("norm_before_gate", norm_before_gate),
        activation=_call.choice("activation", activation, _ACTIVATIONS),
        eps=_call.eps(eps), weight_offset=_call.real("weight_offset", weight_offset),
        pdl=_call.flag("pdl", pdl), head_dim=hd, **qf)
    return prm, fmt, sfmt, g, hd


def _norm_options(entry, eps, weight_offset, pdl, group_size, fp8_format, fp8_max, amax_floor, scale_format,
                  scale_layout, quantize_rounded):
    """add_rmsnorm's / rmsnorm's options checked: (params, fp8 format code, scale format code, group size)."""
    qf, fmt, sfmt, g = _quant_fields(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, quantize_rounded)
    prm = entry.params(eps=_call.eps(eps), weight_offset=_call.real("weight_offset", weight_offset),
                       pdl=_call.flag("pdl", pdl), **qf)
    return prm, fmt, sfmt, g


def _gq_options(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, pdl):
    """group_quant_fp8's options checked: (params, fp8 format code, scale format code, group size)."""
    qf, fmt, sfmt, g = _quant_fields(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, False)
    return _GQ_ENTRY.params(pdl=_call.flag("pdl", pdl), **qf), fmt, sfmt, g


def _token_dims(shape, head_dim):
    """(token dims, row length) of x as the C layer reads it: x [tokens..., H, D], [N, D]
    (one head) or [D]; with head_dim the last dim is the row [H * D].  Dims are used as given
    (torch's symbolic sizes stay symbolic under torch.compile: torch_ops' fakes)."""
    shape = tuple(shape)
    if not shape:
        return (), 0
    if head_dim and shape[-1] != head_dim:
        return shape[:-1], shape[-1]
    if len(shape) >= 3:
        return shape[:-2], shape[-2] * shape[-1]
    return shape[:-1], shape[-1]


def _scale_columns(tok, layout):
    """(T, T_pad): the tokens' count and the columns of a column-major scales buffer [cols,
    T_pad] (col_pad4 rounds T up to a multiple of 4)."""
    T = math.prod(tok)
    return T, ((T + 3) // 4 * 4 if layout == "col_pad4" else T)


def _new_scales(x, tok, cols, dt, layout):
    """scales [tok..., cols] in ``layout``: row-major, column-major ([cols, T] transposed), or
    column-major with T padded to a multiple of 4 (the first T columns of [cols, T_pad])."""
    if layout == "row":
        return _call.empty_like(x, tuple(tok) + (cols,), dt, out="scales")
    T, tp = _scale_columns(tok, layout)
    base = _call.empty_like(x, (cols, tp), dt, out="scales")
    if isinstance(base, DeviceArray):
        return from_pointer(base.data_ptr, tuple(tok) + (cols,), dt, strides=_col_strides(tok, tp),
                            device=(base.device_type, base.device_id), owner=base)
    if isinstance(base, np.ndarray):
        return base.T[:T].reshape(tuple(tok) + (cols,))
    # torch: the view made by strides, not by slicing [:T] of the T_pad columns, whose bound
    # T <= T_pad torch.export cannot prove for a symbolic T (it refused every dynamic export)
    return base.as_strided(tuple(tok) + (cols,), _col_strides(tok, tp))


def _col_strides(tok, tp):
    st, acc = [], 1
    for d in reversed(tok):
        st.append(acc)
        acc *= d
    return tuple(reversed(st)) + (tp,)


def rmsnorm_gated_fp8(x, z, weight, *, eps=1e-6, norm_before_gate=True, activation=_SILU,
                      weight_offset=_ZERO, head_dim=None, group_size=_G128, fp8_format=_E4M3FN, fp8_max=None,
                      amax_floor=_AMAX_FLOOR, scale_format=_FP32, scale_layout=_ROW, quantize_rounded=False,
                      copy_dtype=None, q=None, scales=None, y=None, stream=None, pdl=False):
    """Gated RMSNorm fused with FP8 per-group quantization (docs/ops.md §2)::

        y      = rmsnorm_gated(x, z, weight)            (fp32, as gatednorm.rmsnorm_gated)
        amax   = max |y| over each group of group_size consecutive elements of a token's row [H*D]
        scale  = max(amax, amax_floor) / fp8_max        (2^ceil(log2(scale)) for UE8M0 formats)
        q      = fp8_rne_saturate(y * (1 / scale))

    One kernel launch computes q, scales and (if asked) y rounded once to bf16/fp16/fp32.
    A group holding a NaN or an infinity gets a NaN scale (E8M0 byte 0xff) and NaN codes.

    Args:
        x, z, weight, eps, norm_before_gate, activation, weight_offset, stream, pdl: as
            gatednorm.rmsnorm_gated.  x is ``[tokens..., H, D]``, ``[N, D]`` (one head) or,
            with ``head_dim=D``, ``[tokens..., H*D]``.
        group_size: G (default 128); divides H*D, and divides D or is a multiple of it.
        fp8_format: "e4m3fn" (OCP: NVIDIA, MI350; max 448) or "e4m3fnuz" (MI300; max 240).
        fp8_max: values are clamped to +-fp8_max, then rounded (None: the format's max; 224 is
            common for fnuz); one that is no FP8 value may round up to the next code.
        amax_floor: lower bound of amax (an all-zero group gets scale amax_floor / fp8_max,
            rounded up to a power of two with the UE8M0 formats).
        scale_format: "fp32", "ue8m0" (fp32 powers of two), "e8m0" (uint8 exponent bytes) or
            "e8m0_packed" (int32 words of four exponent bytes, DeepGEMM's layout).
        scale_layout: layout of a new ``scales``: "row" ``[T, K]``, "col" (a ``[T, K]`` view of
            a column-major ``[K, T]`` buffer) or "col_pad4" (of ``[K, T_pad4]``: 16-byte columns
            for 4-byte scales).  Not used when ``scales`` is given (any strides work, e.g.
            E8M0 bytes in a ``[K, T_pad16]`` buffer; the value is still checked).
        quantize_rounded: quantize y rounded to the copy's dtype (x's without a copy), as an
            unfused norm -> bf16 -> quant pipeline does, bit for bit.
        copy_dtype: also return y rounded to this dtype (bf16/fp16/fp32); implied by ``y``.
        q, scales: outputs to write (new ones of x's kind when None).
        y: the copy to write (asks for the copy; without it and without ``copy_dtype``, none).

    Returns:
        ``(q, scales)``, or ``(q, scales, y)`` when a copy is asked.  numpy inputs give
        ml_dtypes float8 arrays; torch inputs torch float8 tensors.

    Raises:
        GatedNormError: naming the bad argument; outputs are then left untouched.
    """
    if x is None:
        raise argument_error("x: required (an array); got None")
    if weight is None:
        raise argument_error("weight: required (the [D] norm weight); got None")
    fast = (norm_before_gate is True and activation is _SILU and weight_offset is _ZERO and head_dim is None
            and quantize_rounded is False and type(eps) is float
            and _quant_defaults(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, pdl))
    checked = fast and _GATED_DEFAULTS.get(eps)
    if not checked:
        opts = (group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, quantize_rounded, head_dim,
                norm_before_gate, activation, eps, weight_offset, pdl)
        key = _call.options_key(opts)
        checked = _call.memo_get(_GATED_OPTIONS, key) or _call.memo_put(_GATED_OPTIONS, key, _gated_options(*opts))
        if fast and eps > 0.0:  # no NaN, and no 0.0 that a -0.0 would find (the checked path keeps its sign)
            _call.memo_put(_GATED_DEFAULTS, eps, checked)
    prm, fmt, sfmt, g, hd = checked
    cdt = _float_out_dtype(copy_dtype, "copy_dtype", "the copy", y, "y")
    want_copy = copy_dtype is not None or y is not None
    if q is None or scales is None or (want_copy and y is None):
        xd = _call.described(x)  # read once for every output made here
        shape = _call.shape_of(xd)
        q, scales = _new_quant(xd, q, scales, fmt, sfmt, g, scale_layout, _token_dims(shape, hd))
        if want_copy and y is None:
            y = _call.empty_like(xd, shape, cdt, out="y")
    _ENTRY.call(stream, x, z, weight, q, scales, y if want_copy else None, params=prm)
    return (q, scales, y) if want_copy else (q, scales)


# ------------------------------------------------------------ §3 RMSNorm / add-RMSNorm
NormOutputs = collections.namedtuple("NormOutputs", ("y", "q", "scales", "residual"))
NormOutputs.__doc__ = """What add_rmsnorm / rmsnorm return: ``y`` (None unless asked), ``q`` and
``scales`` (None unless fp8), ``residual`` (the stored sum x + residual: residual_out, or the
residual updated in place; None for rmsnorm and for add_rmsnorm with no residual)."""

# The wrappers' keyword for the C argument y is y_out (their y is the flag asking for it).
_ADD_ARGS = dict(names=("x", "residual", "weight", "residual_out", "y_out", "q", "scales"),
                 outputs=("residual", "residual_out", "y_out", "q", "scales"), c_names={"y": "y_out"},
                 params_keywords=True)
_ADD_ENTRY = _call.Entry("gatednorm_add_rmsnorm", "gatednorm_add_rmsnorm_params", **_ADD_ARGS)
# With residual_out given the residual is an input only (Entry.with_outputs).
_OUT_OF_PLACE_OUTPUTS = ("residual_out", "y_out", "q", "scales")
# rmsnorm is add_rmsnorm without a residual; its errors say rmsnorm.
_RMSNORM_ENTRY = _call.Entry("gatednorm_add_rmsnorm", "gatednorm_add_rmsnorm_params", **_ADD_ARGS, label="rmsnorm")
_GQ_ENTRY = _call.Entry("gatednorm_group_quant_fp8", "gatednorm_group_quant_fp8_params", ("x", "q", "scales"),
                        outputs=("q", "scales"), params_keywords=True)


def _float_out_dtype(dtype, name, what, given, given_name):
    """The numpy dtype of an optional bf16/fp16/fp32 output (None: not given), checked
    against that output (``given``) when the caller passed one too."""
    if dtype is None:
        return None
    dt = _call.dtype_arg(dtype, name)
    if dt not in (_dtypes.bfloat16, _dtypes.float16, _dtypes.float32):
        raise argument_error("%s: %s; %s must be bf16, fp16 or fp32" % (name, dt, what))
    if given is not None:
        gdt = _call.dtype_of(given, given_name)
        if gdt != dt:
            raise argument_error("%s: %s does not match %s's dtype %s" % (name, dt, given_name, gdt))
    return dt


def _quant_fields(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, quantize_rounded):
    _call.choice("scale_layout", scale_layout, _SCALE_LAYOUT_KEYS)  # refused as the enum options are
    fmt = _call.choice("fp8_format", fp8_format, FP8_FORMATS)
    sfmt = _call.choice("scale_format", scale_format, SCALE_FORMATS)
    g = _call.integer("group_size", group_size)
    if fp8_max is not None:
        fp8_max = _call.real("fp8_max", fp8_max)
        # Checked here too: a value below fp32's range would store as 0, which the C layer
        # reads as "the format's max" (as None, or an explicit 0, ask).
        if not ((fp8_max == 0.0 and not np.signbit(fp8_max)) or fp8_max >= 1.0):  # -0: a negative bound
            raise argument_error("fp8_max: expected None or 0 (the format's max) or a value in [1, the format's max], "
                                 "got %r" % fp8_max)
    af = _call.real("amax_floor", amax_floor)
    if af != 0.0 and np.float32(af) == 0.0:  # below fp32's range: C would read (and report) 0, not the value given
        raise argument_error("amax_floor: expected a finite value >= 1e-30, got %r" % af)
    fields = dict(quant__format=fmt, quant__fp8_max=0.0 if fp8_max is None else fp8_max,
                  quant__amax_floor=af, quant__scale_format=sfmt, quant__group_size=g,
                  quant__quantize_rounded=_call.flag("quantize_rounded", quantize_rounded))
    return fields, fmt, sfmt, g


def _new_quant(x, q, scales, fmt, sfmt, g, scale_layout, dims=None):
    """New q [tokens..., row] and scales (in scale_layout) for x where not given (x: an array,
    its _call.described or a torch fake tensor); dims: (token dims, row), by default x's
    leading dims and last dim."""
    if q is None or scales is None:
        if dims is None:
            shape = _call.shape_of(x)
            dims = (tuple(shape[:-1]), shape[-1]) if shape else ((), 0)
        tok, row = dims
        if q is None:
            q = _call.empty_like(x, tok + (row,), getattr(_dtypes, _Q_NAMES[fmt]), out="q")
        if scales is None:
            scales = _new_scales(x, tok, _scale_cols(row, sfmt, g), getattr(_dtypes, _SCALE_NAMES[sfmt]), scale_layout)
    return q, scales


def _scale_cols(row, sfmt, g):
    """A token's scale columns: its row // G groups, four to an int32 word when packed E8M0."""
    k = row // g if g > 0 else 0
    return (k + 3) // 4 if sfmt == 3 else k


def _norm_wants(y, fp8, y_out=None, q=None, scales=None, quantize_rounded=False):
    """Which outputs a norm call makes, checked (the Python functions' and jax_ops' one rule):
    (want_y, want_q).  An option that only an output not made would read is refused, not
    ignored: y_out with y=False, quantize_rounded without FP8 outputs."""
    want_y = _call.flag("y", y) == 1
    if y_out is not None and not want_y:
        raise argument_error("y_out: given with y=False (no y is written)")
    want_q = _call.flag("fp8", fp8) == 1 or q is not None or scales is not None
    if not want_y and not want_q:
        raise argument_error("y: no output requested (y=False without fp8=True)")
    if quantize_rounded is not False and not want_q and _call.flag("quantize_rounded", quantize_rounded):
        raise argument_error("quantize_rounded: True without FP8 outputs (fp8=False and no q / scales)")
    return want_y, want_q


def _norm_y_dtype(y_dtype, want_y, y_out=None):
    """y's dtype (None: x's), checked against y_out and against a call that writes no y."""
    ydt = _float_out_dtype(y_dtype, "y_dtype", "y", y_out, "y_out")
    if ydt is not None and not want_y:  # it would be ignored; quantize_rounded rounds to x's dtype then
        raise argument_error("y_dtype: given with y=False (no y is written)")
    return ydt


def add_rmsnorm(x, residual, weight, *, eps=1e-6, weight_offset=_ZERO, residual_out=None, y=True, y_dtype=None,
                fp8=False, group_size=_G128, fp8_format=_E4M3FN, fp8_max=None, amax_floor=_AMAX_FLOOR, scale_format=_FP32,
                scale_layout=_ROW, quantize_rounded=False, q=None, scales=None, y_out=None, stream=None, pdl=False):
    """Fused add-RMSNorm (docs/ops.md §3), optionally with FP8 per-group outputs::

        r  = x + residual     in fp32, rounded to residual's dtype and stored (residual_out, or
                              residual in place when residual_out is None)
        y  = r * 1/sqrt(mean(r^2) + eps) * (weight + weight_offset)     (r as stored)

    Outputs, any non-empty combination, in one kernel launch: y (``y=True``, the default; in
    ``y_dtype``, x's dtype by default; written into ``y_out`` when given, which may be x itself)
    and FP8 codes ``q`` with ``scales`` (``fp8=True``, or implied by ``q`` / ``scales``) under
    §2's rules over groups of ``group_size`` elements of hidden; the FP8 options are those of
    gatednorm.rmsnorm_gated_fp8.  ``quantize_rounded`` quantizes y rounded to y's dtype (x's
    without y), so q agrees bit for bit with an unfused norm -> quant pipeline.

    x, residual: ``[tokens..., hidden]``, bf16/fp16/fp32, strided rows allowed (last dim
    contiguous); weight ``[hidden]``, bf16 / fp16 / fp32 (whatever x's dtype).

    Returns:
        NormOutputs(y, q, scales, residual): what was not asked is None; ``residual`` is the
        tensor the sum was stored in.

    Raises:
        GatedNormError: naming the bad argument; outputs are then left untouched.
    """
    return _norm(x, residual, weight, eps, weight_offset, residual_out, y, y_dtype, fp8, group_size, fp8_format, fp8_max,
                 amax_floor, scale_format, scale_layout, quantize_rounded, q, scales, y_out, stream, pdl)


def rmsnorm(x, weight, *, eps=1e-6, weight_offset=_ZERO, y=True, y_dtype=None, fp8=False, group_size=_G128,
            fp8_format=_E4M3FN, fp8_max=None, amax_floor=_AMAX_FLOOR, scale_format=_FP32, scale_layout=_ROW,
            quantize_rounded=False, q=None, scales=None, y_out=None, stream=None, pdl=False):
    """RMSNorm over the last dim (docs/ops.md §3 without a residual), optionally with FP8
    per-group outputs: as add_rmsnorm without residual.  Returns NormOutputs (residual None)."""
    return _norm(x, None, weight, eps, weight_offset, None, y, y_dtype, fp8, group_size, fp8_format, fp8_max,
                 amax_floor, scale_format, scale_layout, quantize_rounded, q, scales, y_out, stream, pdl,
                 entry=_RMSNORM_ENTRY)


def _norm(x, residual, weight, eps, weight_offset, residual_out, y, y_dtype, fp8, group_size, fp8_format, fp8_max,
          amax_floor, scale_format, scale_layout, quantize_rounded, q, scales, y_out, stream, pdl, entry=_ADD_ENTRY):
    if x is None:
        raise argument_error("x: required (an array); got None")
    if weight is None:
        raise argument_error("weight: required (the [hidden] norm weight); got None")
    # The usual call: y asked (the default), every option but eps and fp8 at its default
    # (_NORM_DEFAULTS).  Nothing the slow path refuses can pass here: y=True makes y
    # wanted, and with these options no output is required that is not there.
    fast = (y is True and y_dtype is None and weight_offset is _ZERO and quantize_rounded is False
            and (fp8 is False or fp8 is True) and type(eps) is float
            and (entry is _ADD_ENTRY or entry is _RMSNORM_ENTRY)  # a comm's entry is not kept here
            and _quant_defaults(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, pdl))
    hit = fast and _NORM_DEFAULTS.get((entry, eps))
    if hit:
        prm, fmt, sfmt, g = hit
        want_y, want_q, ydt = True, fp8 is True or q is not None or scales is not None, None
    else:
        want_y, want_q = _norm_wants(y, fp8, y_out, q, scales, quantize_rounded)
        opts = (eps, weight_offset, pdl, group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout,
                quantize_rounded)
        key = _call.options_key(opts)
        checked = _call.memo_get(_NORM_OPTIONS, key) or _call.memo_put(_NORM_OPTIONS, key, _norm_options(entry, *opts))
        prm, fmt, sfmt, g = checked
        ydt = _norm_y_dtype(y_dtype, want_y, y_out)
        if fast and eps > 0.0:  # as rmsnorm_gated_fp8's
            _call.memo_put(_NORM_DEFAULTS, (entry, eps), checked)
    if residual_out is not None:
        if residual is None:
            raise argument_error("residual_out: given without a residual (there is no sum to store)")
        entry = entry.with_outputs(_OUT_OF_PLACE_OUTPUTS)
    xd = x
    if (want_y and y_out is None) or (want_q and (q is None or scales is None)):
        xd = _call.described(x)  # read once for every output made here
    if want_y and y_out is None:
        y_out = _call.empty_like(xd, None, ydt, "y_dtype", out="y_out")
    if want_q:
        q, scales = _new_quant(xd, q, scales, fmt, sfmt, g, scale_layout)
    entry.call(stream, x, residual, weight, residual_out, y_out if want_y else None, q if want_q else None,
               scales if want_q else None, params=prm)
    res = None if residual is None else (residual if residual_out is None else residual_out)
    return NormOutputs(y_out if want_y else None, q if want_q else None, scales if want_q else None, res)


def group_quant_fp8(x, *, group_size=_G128, fp8_format=_E4M3FN, fp8_max=None, amax_floor=_AMAX_FLOOR, scale_format=_FP32,
                    scale_layout=_ROW, q=None, scales=None, stream=None, pdl=False):
    """§2's per-group FP8 quantization of an existing bf16/fp16/fp32 tensor x
    ``[tokens..., hidden]`` (docs/ops.md §3, "Standalone group quantization"); options as
    gatednorm.rmsnorm_gated_fp8.  Returns ``(q, scales)``."""
    fast = _quant_defaults(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, pdl)
    checked = fast and _GQ_DEFAULTS.get(None)
    if not checked:
        opts = (group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout, pdl)
        key = _call.options_key(opts)
        checked = _call.memo_get(_GQ_OPTIONS, key) or _call.memo_put(_GQ_OPTIONS, key, _gq_options(*opts))
        if fast:
            _GQ_DEFAULTS[None] = checked  # one key: no eps
    prm, fmt, sfmt, g = checked
    q, scales = _new_quant(_call.described(x) if q is None or scales is None else x, q, scales, fmt, sfmt, g, scale_layout)
    _GQ_ENTRY.call(stream, x, q, scales, params=prm)
    return q, scales
