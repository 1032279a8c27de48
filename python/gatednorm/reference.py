"""float64 numpy reference implementations of every op: the oracle of the tests and of
``gatednorm check``.  Inputs are upcast exactly from their dtype (bf16/fp8 via ml_dtypes);
the math is done in float64 and the result is returned in float64 (no output rounding).

Also here: the comparison rule the project uses (``tolerance`` / ``compare``): an output
must lie within half an ulp of its dtype around the float64 value, plus a relative 2e-5 for
the fp32 arithmetic before the single rounding, plus a tiny absolute term for subnormals.
"""

from __future__ import annotations

import math

import numpy as np

from . import _dtypes

__all__ = ["rmsnorm_gated", "rmsnorm_gated_fp8", "add_rmsnorm", "rmsnorm", "group_quant_fp8", "fp8_group_quant",
           "fp8_max_of", "silu", "sigmoid", "as_float64", "ulp", "tolerance", "compare", "Comparison", "int4_unpack",
           "w4a16_dequantize", "w4a16_matmul", "w4a16_tolerance"]


def as_float64(a):
    """float64 numpy copy of an array (numpy incl. ml_dtypes, gatednorm.DeviceArray, or
    anything np.asarray accepts); None stays None."""
    if a is None:
        return None
    if not isinstance(a, np.ndarray) and hasattr(a, "numpy") and hasattr(a, "__dlpack__"):
        try:
            a = a.numpy()
        except Exception:
            a = np.from_dlpack(a)
    return np.asarray(a).astype(np.float64)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) in float64, without overflow warnings."""
    z = np.asarray(z, np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def silu(z: np.ndarray) -> np.ndarray:
    """z * sigmoid(z) in float64."""
    z = np.asarray(z, np.float64)
    return z * sigmoid(z)


_ACTS = {"silu": silu, "swish": silu, "sigmoid": sigmoid, 0: silu, 1: sigmoid}


def rmsnorm_gated(x, z=None, weight=None, *, eps=1e-6, norm_before_gate=True, activation="silu",
                  weight_offset=0.0, group_size=None, out=None, out_dtype=None, stream=None):
    """float64 reference of gatednorm.rmsnorm_gated (same arguments; ``out``, ``out_dtype``
    and ``stream`` are accepted and ignored).  Returns a float64 array of x's shape::

        act(z) = silu(z) = z * sigmoid(z)        (or sigmoid(z))
        u      = x if norm_before_gate else x * act(z)
        y      = u / sqrt(mean_D(u^2) + eps) * (weight + weight_offset)
        y      = y * act(z)     if norm_before_gate and z is given

    ``eps`` and ``weight_offset`` are first rounded to fp32, as the C ABI stores them.
    """
    if weight is None:
        raise ValueError("weight: required")
    act = _ACTS.get(activation)
    if act is None:
        raise ValueError("activation: expected 'silu' or 'sigmoid', got %r" % (activation,))
    x64 = as_float64(x)
    shape = x64.shape
    if group_size:
        g = int(group_size)
        if x64.ndim < 1 or shape[-1] % g:
            raise ValueError("group_size: %d does not divide the last dim of x %s" % (g, shape))
        x64 = x64.reshape(shape[:-1] + (shape[-1] // g, g))
    a = None
    if z is not None:
        z64 = as_float64(z)
        if z64.shape != shape:
            raise ValueError("z: shape %s differs from x's %s" % (z64.shape, shape))
        a = act(z64.reshape(x64.shape))
    # w + weight_offset is an fp32 add (ops.md §1): past fp32's range it is an infinity
    w = fp32_range(as_float64(weight) + float(np.float32(weight_offset)))
    if w.shape != (x64.shape[-1],):
        raise ValueError("weight: expected shape (%d,), got %s" % (x64.shape[-1], w.shape))
    u = x64 * a if (a is not None and not norm_before_gate) else x64
    with np.errstate(invalid="ignore", over="ignore"):  # NaN / Inf rows propagate (inf / inf: NaN)
        ms = np.mean(u * u, axis=-1, keepdims=True)
        # the fp32 y of ops.md §1 overflows before a gate applied after the norm can shrink it
        y = fp32_range(u / np.sqrt(ms + float(np.float32(eps))) * w)
    if a is not None and norm_before_gate:
        y = y * a
    return fp32_range(y).reshape(shape)


def fp32_range(y):
    """y as the library's fp32 arithmetic holds it: a value past fp32's range (after its round
    to nearest) is an infinity of its sign, the rest unchanged (float64)."""
    y = np.asarray(y, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        over = np.isinf(y.astype(np.float32)) & np.isfinite(y)
    return np.where(over, np.copysign(np.inf, y), y) if over.any() else y


# ------------------------------------------------------------------- FP8 group quantization
_FP8 = {"e4m3fn": ("float8_e4m3fn", 448.0), "e4m3fnuz": ("float8_e4m3fnuz", 240.0)}  # ml_dtypes loads on use
_UE8M0 = {"fp32": False, "ue8m0": True, "e8m0": True, "e8m0_packed": True}


def fp8_max_of(fp8_format="e4m3fn", fp8_max=None):
    """The clamp bound before rounding: fp8_max (rounded to fp32) or the format's max."""
    return _FP8[fp8_format][1] if not fp8_max else float(np.float32(fp8_max))


def fp8_group_quant(y, group_size=128, *, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32"):
    """ops.md §2's quantization of ``y`` [..., R] (float64) over groups of group_size
    consecutive elements of the last dim.  Returns (q, scales): q the ml_dtypes float8 array
    of y's shape, quantized by ml_dtypes from float64 after clamping to +-fp8_max; scales
    float64 [..., R / G] (powers of two for the UE8M0 formats; NaN for a group with a NaN or
    an infinity, whose codes are then all NaN)."""
    dt = getattr(_dtypes, _FP8[fp8_format][0])
    fmax = fp8_max_of(fp8_format, fp8_max)
    y = np.asarray(y, np.float64)
    shape = y.shape
    g = int(group_size)
    yg = y.reshape(shape[:-1] + (shape[-1] // g, g))
    with np.errstate(invalid="ignore", over="ignore"):
        amax = np.max(np.abs(yg), axis=-1)  # NaN propagates
        scale = np.maximum(amax, float(np.float32(amax_floor))) / fmax
        scale = np.where(np.isfinite(amax), scale, np.nan)
        if _UE8M0[scale_format]:  # a power of two, at most 2^127 (E8M0's largest finite)
            scale = np.minimum(np.exp2(np.ceil(np.log2(scale))), 2.0 ** 127)
        v = np.clip(yg / scale[..., None], -fmax, fmax)
    v = np.where(np.isnan(scale)[..., None], np.nan, v)
    return v.astype(dt).reshape(shape), scale


def rmsnorm_gated_fp8(x, z=None, weight=None, *, eps=1e-6, norm_before_gate=True, activation="silu",
                      weight_offset=0.0, head_dim=None, group_size=128, fp8_format="e4m3fn", fp8_max=None,
                      amax_floor=1e-10, scale_format="fp32", quantize_rounded=False, copy_dtype=None, y=None,
                      **_ignored):
    """float64 reference of gatednorm.rmsnorm_gated_fp8 (same options; output arrays, layouts
    and stream are ignored).  Returns (q, scales, y): q [tokens..., H*D] as the ml_dtypes
    float8 array, scales float64 [tokens..., K] (E8M0 formats as their power-of-two values),
    y the float64 norm output of x's shape (unrounded).  With quantize_rounded, y is rounded
    to the copy's dtype (copy_dtype, or that of the copy array ``y``; x's dtype without a copy)
    before it is quantized."""
    y_copy = y  # the copy array, when given; y is the norm's output below
    with np.errstate(invalid="ignore", over="ignore"):  # NaN / Inf rows propagate
        y = rmsnorm_gated(x, z, weight, eps=eps, norm_before_gate=norm_before_gate, activation=activation,
                          weight_offset=weight_offset, group_size=head_dim)
    shape = y.shape
    if head_dim and shape[-1] != head_dim:
        tok, row = shape[:-1], shape[-1]
    elif len(shape) >= 3:
        tok, row = shape[:-2], shape[-2] * shape[-1]
    else:
        tok, row = shape[:-1], shape[-1]
    yq = y
    if quantize_rounded:
        if copy_dtype is not None:
            rdt = _dtypes.to_numpy_dtype(copy_dtype)
        else:
            rdt = _dtype_of(y_copy if y_copy is not None else x)
        with np.errstate(over="ignore"):
            yq = y.astype(rdt).astype(np.float64)
    q, s = fp8_group_quant(yq.reshape(tuple(tok) + (row,)), group_size, fp8_format=fp8_format, fp8_max=fp8_max,
                           amax_floor=amax_floor, scale_format=scale_format)
    return q, s, y
# ------------------------------------------------------------------------------ W4A16
def int4_unpack(q) -> np.ndarray:
    """Plain codes ``q`` uint8 ``[N, K/2]`` (two per byte along K, low nibble first) ->
    int64 ``[N, K]`` codes 0..15."""
    q = np.asarray(q, np.uint8)
    out = np.empty(q.shape[:-1] + (q.shape[-1] * 2,), np.int64)
    out[..., 0::2] = q & 0xF
    out[..., 1::2] = q >> 4
    return out


def w4a16_dequantize(q, scales, zeros=None, dtype="bfloat16") -> np.ndarray:
    """The dequantized weight ``[K, N]`` as float64 holding 16-bit values::

        w16[k, n] = RNE_dtype((q[n, k] - z[n, k // G]) * RNE_dtype(s[n, k // G]))

    q: plain uint8 ``[N, K/2]``; scales ``[N, K/G]``; zeros uint8 ``[N, K/G]`` codes or None
    (symmetric: z = 8); dtype: the activations' dtype (bf16 / fp16), in which the scale is
    held and the product rounded once.  (q - z) * s16 is exact in float64, so its cast is
    the one rounding."""
    dt = _dtypes.to_numpy_dtype(dtype)
    codes = int4_unpack(q)
    n, k = codes.shape
    s = np.asarray(scales)
    g = k // s.shape[1]
    s16 = np.asarray(s, np.float64).astype(np.float32).astype(dt).astype(np.float64) if s.dtype != dt \
        else s.astype(np.float64)
    z = np.full(s.shape, 8, np.int64) if zeros is None else (np.asarray(zeros).astype(np.int64) & 0xF)
    w = (codes - np.repeat(z, g, axis=1)).astype(np.float64) * np.repeat(s16, g, axis=1)
    return w.astype(np.float32).astype(dt).astype(np.float64).T


def w4a16_matmul(a, q, scales, zeros=None, bias=None, dtype=None) -> np.ndarray:
    """float64 reference of gatednorm.w4a16_matmul: ``a16 @ w16 (+ bias)`` in float64, no
    output rounding.  a: ``[M, K]`` bf16/fp16 (its dtype is the dequantization dtype unless
    ``dtype`` is given); q, scales, zeros: the plain weight (see w4a16_dequantize)."""
    a = np.asarray(a)
    dt = a.dtype if dtype is None else _dtypes.to_numpy_dtype(dtype)
    w = w4a16_dequantize(q, scales, zeros, dt)
    y = a.astype(np.float64) @ w
    if bias is not None:
        y = y + as_float64(bias)
    return y


def w4a16_tolerance(a, q, scales, zeros, bias, out_dtype, ref=None) -> np.ndarray:
    """Allowed |out - ref| of a W4A16 GEMM (docs/w4a16.md, "Accuracy"): the fp32 sum of K
    exact products a16 * w16 (plus at most 64 split-K partials and the bias), in any order,
    with round-to-nearest or truncating additions (unit 2^-23), is within
    E = (K + 64) * 2^-23 * (|a| @ |w16| + |bias|) of the exact sum; the output is then
    rounded once: 0.5 ulp of out_dtype at |ref| + E."""
    a = np.asarray(a)
    w = w4a16_dequantize(q, scales, zeros, a.dtype)
    k = w.shape[0]
    mag = np.abs(a.astype(np.float64)) @ np.abs(w)
    if bias is not None:
        mag = mag + np.abs(as_float64(bias))
    e = (k + 64) * 2.0 ** -23 * mag
    if ref is None:
        ref = w4a16_matmul(a, q, scales, zeros, bias)
    return e + 0.5 * ulp(np.abs(ref) + e, out_dtype)


def _dtype_of(a):
    return a.dtype if hasattr(a, "dtype") and isinstance(a.dtype, np.dtype) else np.asarray(a).dtype


def add_rmsnorm(x, residual, weight, *, eps=1e-6, weight_offset=0.0, y_dtype=None, fp8=False, group_size=128,
                fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32", quantize_rounded=False,
                y=True, y_out=None, **_ignored):
    """float64 reference of gatednorm.add_rmsnorm (docs/ops.md §3).  Returns a dict with
    ``residual`` (the stored sum: x + residual added in fp32 and rounded to residual's dtype,
    as that dtype; None without a residual), ``y`` (float64, unrounded, normalizing the stored
    sum) and, with fp8, ``q`` (ml_dtypes float8) and ``scales`` (float64), quantizing y (rounded,
    with quantize_rounded, to the dtype of y as written: y_out's, y_dtype's, x's by default;
    x's when no y is written, ``y=False``).  y past fp32's range is infinite (fp32_range)."""
    xdt = _dtype_of(x)
    y_written = bool(y)  # the flag; y is the norm's output below
    r_st = None
    if residual is not None:
        rdt = _dtype_of(residual)
        with np.errstate(over="ignore", invalid="ignore"):
            r32 = as_float64(x).astype(np.float32) + as_float64(residual).astype(np.float32)  # the fp32 add
            r_st = r32.astype(rdt)
        r = as_float64(r_st)
    else:
        r = as_float64(x)
    w = fp32_range(as_float64(weight) + float(np.float32(weight_offset)))  # an fp32 add
    with np.errstate(invalid="ignore", over="ignore"):
        ms = np.mean(r * r, axis=-1, keepdims=True)
        y = fp32_range(r / np.sqrt(ms + float(np.float32(eps))) * w)
    out = {"residual": r_st, "y": y}
    if fp8:
        yq = y
        if quantize_rounded:  # y's dtype where y is written, else x's (as the library)
            if y_out is not None:
                rd = _dtype_of(y_out)
            else:
                rd = _dtypes.to_numpy_dtype(y_dtype) if y_written and y_dtype is not None else xdt
            with np.errstate(over="ignore"):
                yq = y.astype(rd).astype(np.float64)
        out["q"], out["scales"] = fp8_group_quant(yq, group_size, fp8_format=fp8_format, fp8_max=fp8_max,
                                                  amax_floor=amax_floor, scale_format=scale_format)
    return out


def rmsnorm(x, weight, **kw):
    """float64 reference of gatednorm.rmsnorm: add_rmsnorm without a residual."""
    return add_rmsnorm(x, None, weight, **kw)


def group_quant_fp8(x, *, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32",
                    **_ignored):
    """float64 reference of gatednorm.group_quant_fp8: (q, scales) of fp8_group_quant on x."""
    return fp8_group_quant(as_float64(x), group_size, fp8_format=fp8_format, fp8_max=fp8_max, amax_floor=amax_floor,
                           scale_format=scale_format)


# --------------------------------------------------------------------------- comparison
_FORMAT_NAMES = {  # dtype name: (explicit mantissa bits, minimum normal exponent)
    "float8_e4m3fn": (3, -6),
    "float8_e4m3fnuz": (3, -7),
    "bfloat16": (7, -126),
    "float16": (10, -14),
    "float32": (23, -126),
    "float64": (52, -1022),
}
_formats_table = None


def _formats() -> dict:
    """dtype -> (mantissa bits, min normal exponent); built on first use (ml_dtypes loads then)."""
    global _formats_table
    if _formats_table is None:
        _formats_table = {np.dtype(np.float64) if n == "float64" else getattr(_dtypes, n): v
                          for n, v in _FORMAT_NAMES.items()}
    return _formats_table
DEFAULT_RTOL = 2e-5
DEFAULT_ATOL = 2.0 ** -126  # fp32's smallest normal: covers flushed fp32 subnormals


def ulp(ref, dtype) -> np.ndarray:
    """Spacing of ``dtype`` (bf16/fp16/fp32) at the magnitude of ``ref`` (subnormals included)."""
    mant, emin = _formats()[_dtypes.to_numpy_dtype(dtype)]
    r = np.abs(np.asarray(ref, np.float64))
    r = np.where(np.isfinite(r), r, 0.0)  # no spacing at an infinity or NaN: the smallest one stands in
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(r > 0, r, 1.0)))
    e = np.where(r > 0, np.maximum(e, emin), emin)
    return np.ldexp(1.0, (e - mant).astype(np.int64))


def tolerance(ref, dtype, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> np.ndarray:
    """Allowed |out - ref|: 0.5 * ulp_dtype(ref) + rtol * |ref| + atol (a single rounding
    of an fp32 computation)."""
    r = np.asarray(ref, np.float64)
    return 0.5 * ulp(r, dtype) + rtol * np.abs(r) + atol


class Comparison:
    """Result of compare(): ``ok``, ``n_bad``, ``n_nan`` (unwritten/NaN outputs), ``max_ulp``
    (worst |out - ref| in ulps of the output dtype) and a description of the worst element."""

    def __init__(self, ok, n_bad, n_nan, max_ulp, worst, size):
        self.ok, self.n_bad, self.n_nan, self.max_ulp, self.worst, self.size = ok, n_bad, n_nan, max_ulp, worst, size

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return ("Comparison(ok=%s, bad=%d/%d, nan=%d, max_ulp=%.3g%s)"
                % (self.ok, self.n_bad, self.size, self.n_nan, self.max_ulp, ", worst=" + self.worst if self.worst else ""))


def compare(out, ref, dtype=None, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> Comparison:
    """Check ``out`` (any dtype, numpy) against the float64 ``ref`` with tolerance(); NaNs
    in ``out`` where ``ref`` is finite count as failures (poisoned, unwritten elements)."""
    out = np.asarray(out)
    dtype = out.dtype if dtype is None else _dtypes.to_numpy_dtype(dtype)
    o = out.astype(np.float64)
    r = np.asarray(ref, np.float64)
    if o.shape != r.shape:
        return Comparison(False, o.size, 0, math.inf, "shape %s != reference %s" % (o.shape, r.shape), o.size)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, judged below
        err = np.abs(o - r)
        tol = np.where(np.isinf(r), 0.0, tolerance(r, dtype, rtol, atol))  # an infinity allows only itself
    bad = ~(err <= tol) & ~(np.isnan(o) & np.isnan(r)) & ~(o == r)  # NaN in both, or the same infinity: fine
    # A finite reference whose fp32 value may reach the output dtype's overflow edge (its max
    # plus half an ulp: 65520 for fp16) rounds to an infinity of its sign: the correct output
    # (ops.md: too large for the format becomes infinity), which only the reference's own
    # infinities allowed before (a review found fp16 outputs of 65520 .. FLT_MAX refused).
    import ml_dtypes

    dt = _dtypes.to_numpy_dtype(dtype)
    top = float(ml_dtypes.finfo(dt).max)
    edge = top + 0.5 * math.ldexp(1.0, math.frexp(top)[1] - 1 - _formats()[dt][0])  # max + half its ulp
    with np.errstate(invalid="ignore"):
        overflows = np.isfinite(r) & np.isinf(o) & (np.sign(o) == np.sign(r)) & (np.abs(r) + tol >= edge)
    bad &= ~overflows
    n_nan = int(np.count_nonzero(np.isnan(o) & ~np.isnan(r)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ulps = np.where(np.isnan(err), np.inf, err / ulp(r, dtype))
    ulps = np.where(overflows, 0.0, ulps)  # the correct rounding: no error
    n_bad = int(np.count_nonzero(bad))
    worst = ""
    if n_bad:
        i = np.unravel_index(int(np.argmax(np.where(bad, ulps, -1))), r.shape)
        worst = "at %s: out=%r ref=%r (%.3g ulp)" % (tuple(int(k) for k in i), float(o[i]), float(r[i]), float(ulps[i]))
    max_ulp = float(np.max(ulps)) if ulps.size else 0.0
    return Comparison(n_bad == 0, n_bad, n_nan, max_ulp, worst, o.size)
