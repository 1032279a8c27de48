"""gatednorm's ops inside ``jax.jit``, through XLA's FFI: ``import gatednorm.jax_ops`` (it needs
jax; ``import gatednorm`` never imports it) gives

    rmsnorm_gated(x, z, weight, ...)                  -> y
    rmsnorm_gated_fp8(x, z, weight, ..., copy_dtype)  -> (q, scales) or (q, scales, y)
    rmsnorm(x, weight, ..., fp8=False)                -> NormOutputs(y, q, scales, None)
    add_rmsnorm(x, residual, weight, ..., fp8=False)  -> NormOutputs(y, q, scales, residual)
    group_quant_fp8(x, ...)                           -> (q, scales)
    w4a16_matmul(a, w4a16_weight(W), bias, ...)       -> out

with the keywords of the functions of the same names (docs/ops.md) minus output arrays,
``stream``, ``pdl`` and the W4A16 workspace.  ``w4a16_weight`` turns a W4A16Weight into a
W4A16Arrays pytree (its arrays leaves, its params static), so a weight passes through
``jax.jit`` as an argument.  JAX arrays are values, so add_rmsnorm returns the new residual, in
the residual's own buffer when the caller donates it (``jax.jit(..., donate_argnums=...)``):
the custom call aliases the two.  Each op is one XLA custom call (``jax.ffi.ffi_call``) to
the library's C handler (``gatednorm_xla_ffi_host`` / ``_gpu`` in gatednorm.h), which runs
the C entry on XLA's buffers and, on a GPU, XLA's stream: no Python, no GIL and no host round
trip at run time.  JAX arrays have no strides, so column-major scales come back as their
buffer: ``scale_layout="col"`` ``[K, T]``, ``"col_pad4"`` ``[K, T4]`` (T the tokens'
product, T4 rounded up to 4, the padding 0).  Under ``jax.vmap`` the calls run one batch
element at a time.

Errors come at trace time: the wrapper checks its options with the functions' own code,
that every argument but the weight leads with x's tokens, and then makes the C entry validate
the call on host stand-ins of the operands and results with no tokens (their first dim 0,
everything else as traced), so a bad shape, dtype or option is a GatedNormError naming the
argument before anything runs; XLA skips a custom call whose results are empty, which would
otherwise check nothing.  What only a GPU can refuse (a launch too large, device errors)
comes at run time, as an XLA error carrying the library's message.
"""

from __future__ import annotations

import ctypes
import threading

import jax
import jax.numpy as jnp
import numpy as np

if not hasattr(jax, "ffi") or not hasattr(jax.ffi, "ffi_call"):  # jax.ffi: jax 0.5 and later
    raise ImportError("gatednorm.jax_ops needs jax.ffi (jax >= 0.5); this jax is %s" % jax.__version__)

from . import _dtypes, _ffi, ops, ops_fp8, w4a16
from ._ffi import argument_error, ffi

__all__ = ["rmsnorm_gated", "rmsnorm_gated_fp8", "rmsnorm", "add_rmsnorm", "group_quant_fp8", "w4a16_weight",
           "W4A16Arrays", "w4a16_matmul", "TARGET"]

TARGET = "gatednorm_call"

# The C entries the handler calls, by the `entry` attribute (gatednorm.h's table).
_GATED, _GATED_FP8, _ADD, _GQ, _W4A16 = range(5)
_NULL_SLOT = -1  # a slot code: >= 0 operand i, <= -2 result -(code + 2)


# ---------------------------------------------------------------------------- registration
_LOCK = threading.Lock()
_registered = False


def _register():
    """Registers the library's handlers with XLA, once a process: the host one for "cpu", the
    GPU one for this build's GPU platform.  The handlers are C functions of the loaded
    library, so a registration outlives any Python object (a reload of this module finds the
    target registered with the same address)."""
    global _registered
    with _LOCK:
        if _registered:
            return
        from . import device_count

        lib = _ffi.lib()
        targets = [("cpu", lib.gatednorm_xla_ffi_host)]
        if device_count() > 0:
            gpu = "ROCM" if lib.gatednorm_gpu_device_type() == lib.GATEDNORM_DEVICE_TYPE_ROCM else "CUDA"
            targets.append((gpu, lib.gatednorm_xla_ffi_gpu))
        for platform, fn in targets:
            capsule = jax.ffi.pycapsule(ctypes.c_void_p(int(ffi.cast("uintptr_t", fn))))
            try:
                jax.ffi.register_ffi_target(TARGET, capsule, platform=platform)
            except Exception as e:  # registered before in this process (a reload): the same C function
                if "uplicate" not in str(e) or "different" in str(e):
                    raise
        _registered = True


class _Call:
    """One custom call being built, in the C entry's argument order: each tensor argument is
    an operand (a traced array), a result (shape, dtype) or NULL.  ``untokened``: the slots of
    arguments not shaped by the tokens (a norm weight; a W4A16 weight's parts, bias and
    workspace); every other argument leads with x's (a's) tokens."""

    def __init__(self, entry, checker, untokened=()):
        self.entry, self.checker, self.untokened = entry, checker, untokened
        self.codes, self.operands, self.results, self.avals = [], [], [], []
        self.views, self.aliases = [], {}

    def operand(self, a):
        if a is None:
            self.codes.append(_NULL_SLOT)
            self.avals.append(None)
        else:
            if not hasattr(a, "shape") or not hasattr(a, "dtype"):
                raise argument_error("%s: expected a JAX array, got %s" % (self.checker.names[len(self.codes)],
                                                                           type(a).__name__))
            self.codes.append(len(self.operands))
            self.operands.append(a)
            self.avals.append((tuple(a.shape), np.dtype(a.dtype)))

    def result(self, shape, dtype=None, view=None, zeroed=False):
        """A result buffer of ``shape``; ``view`` (shape, strides in elements): the C entry's
        tensor is that strided view of the buffer (the handler's ``views`` attribute), checked
        at trace time as that view; ``zeroed``: the buffer starts as zeros (a zeros operand
        aliased to it), so elements the entry does not write (col_pad4's padding) are 0."""
        if shape is None:
            self.codes.append(_NULL_SLOT)
            self.avals.append(None)
            return
        slot, index = len(self.codes), len(self.results)
        self.codes.append(-(index + 2))
        self.results.append(jax.ShapeDtypeStruct(tuple(shape), dtype))
        self.avals.append((tuple(view[0] if view else shape), np.dtype(dtype)))
        if view is not None:
            vshape, vstrides = view
            self.views += [slot, len(vshape)] + [int(d) for d in vshape] + [int(st) for st in vstrides]
        if zeroed:
            self.aliases[len(self.operands)] = index
            self.operands.append(jnp.zeros(tuple(shape), dtype))

    def run(self, prm, aliases=None):
        """Validates the call on token-less host stand-ins (the C entry's own checks, named
        errors), then makes it: the results, in order."""
        x_shape = self.avals[0][0]
        zero_tokens = len(x_shape) >= 2  # a 1-D x is one token: its stand-ins keep their (small) shapes
        stand_ins = []
        for i, av in enumerate(self.avals):
            if av is None:
                stand_ins.append(None)
                continue
            shape, dt = av
            if zero_tokens and i not in self.untokened:
                # Every tokened argument leads with x's tokens: checked here on the real
                # shapes (zeroing them would hide a mismatch, or make it read as another one).
                if len(shape) < 2 or shape[0] != x_shape[0]:
                    raise argument_error("%s: shape %s does not lead with x's tokens (x is %s)"
                                         % (self.checker.names[i], list(shape), list(x_shape)))
                shape = (0,) + shape[1:]
            stand_ins.append(np.zeros(shape, dt))
        self.checker.call(None, *stand_ins, params=prm)
        _register()
        params = np.frombuffer(ffi.buffer(prm), np.uint8).copy()
        if self.aliases:
            aliases = {**(aliases or {}), **self.aliases}
        call = jax.ffi.ffi_call(TARGET, self.results, vmap_method="sequential", input_output_aliases=aliases)
        attrs = dict(entry=np.int64(self.entry), slots=np.asarray(self.codes, np.int64), params=params)
        if self.views:
            attrs["views"] = np.asarray(self.views, np.int64)
        return call(*self.operands, **attrs)


def _jnp_dtype(dt):
    return jnp.dtype(np.dtype(dt))


def _quant_results(c, tok, row, fmt, sfmt, g, layout, want=True):
    """q and scales as results of call ``c`` (NULL slots unless ``want``).  JAX arrays have no
    strides, so a column-major layout comes back as its buffer itself: "col" ``[K, T]``,
    "col_pad4" ``[K, T4]`` (T4 = T rounded up to 4, the padding 0), T the product of the token
    dims; the C entry writes it through a ``[T..., K]`` view with the numpy functions' strides."""
    cols = ops_fp8._scale_cols(row, sfmt, g)
    q_dt = _jnp_dtype(getattr(_dtypes, ops_fp8._Q_NAMES[fmt]))
    s_dt = _jnp_dtype(getattr(_dtypes, ops_fp8._SCALE_NAMES[sfmt]))
    tok = tuple(tok)
    c.result(tok + (row,) if want else None, q_dt)
    if not want or layout == "row":
        c.result(tok + (cols,) if want else None, s_dt)
        return
    T, tp = ops_fp8._scale_columns(tok, layout)
    c.result((cols, tp), s_dt, view=(tok + (cols,), ops_fp8._col_strides(tok, tp)), zeroed=tp != T)


def _x(x):
    if x is None:
        raise argument_error("x: required (a JAX array); got None")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise argument_error("x: expected a JAX array, got %s" % type(x).__name__)
    return x


# ---------------------------------------------------------------------------- the ops
def rmsnorm_gated(x, z, weight, *, eps=1e-6, norm_before_gate=True, activation="silu", weight_offset=0.0,
                  group_size=None, out_dtype=None):
    """gatednorm.rmsnorm_gated (docs/ops.md §1) as one XLA custom call; returns y."""
    if weight is None:
        raise argument_error("weight: required (the [D] norm weight); got None")
    prm = ops._params(eps, norm_before_gate, activation, weight_offset, group_size, False)
    odt = ops_fp8._float_out_dtype(out_dtype, "out_dtype", "the output", None, None)
    c = _Call(_GATED, ops._RMSNORM_GATED, untokened=(2,))
    for a in (_x(x), z, weight):
        c.operand(a)
    c.result(x.shape, x.dtype if odt is None else _jnp_dtype(odt))
    return c.run(prm)[0]


def rmsnorm_gated_fp8(x, z, weight, *, eps=1e-6, norm_before_gate=True, activation="silu", weight_offset=0.0,
                      head_dim=None, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10,
                      scale_format="fp32", scale_layout="row", quantize_rounded=False, copy_dtype=None):
    """gatednorm.rmsnorm_gated_fp8 (docs/ops.md §2) as one XLA custom call; returns (q, scales),
    or (q, scales, y) with ``copy_dtype``."""
    if weight is None:
        raise argument_error("weight: required (the [D] norm weight); got None")
    prm, fmt, sfmt, g, hd = ops_fp8._gated_options(group_size, fp8_format, fp8_max, amax_floor, scale_format,
                                                   scale_layout, quantize_rounded, head_dim, norm_before_gate,
                                                   activation, eps, weight_offset, False)
    cdt = ops_fp8._float_out_dtype(copy_dtype, "copy_dtype", "the copy", None, None)
    tok, row = ops_fp8._token_dims(_x(x).shape, hd)
    c = _Call(_GATED_FP8, ops_fp8._ENTRY, untokened=(2,))
    for a in (x, z, weight):
        c.operand(a)
    _quant_results(c, tok, row, fmt, sfmt, g, scale_layout)
    c.result(None if cdt is None else x.shape, None if cdt is None else _jnp_dtype(cdt))
    return tuple(c.run(prm))


def add_rmsnorm(x, residual, weight, *, eps=1e-6, weight_offset=0.0, y=True, y_dtype=None, fp8=False, group_size=128,
                fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32", scale_layout="row",
                quantize_rounded=False):
    """gatednorm.add_rmsnorm (docs/ops.md §3) as one XLA custom call: NormOutputs(y, q, scales,
    residual), residual the stored sum x + residual (a new array, in the old one's buffer
    when the caller donates it)."""
    if residual is None:
        raise argument_error("residual: required (use jax_ops.rmsnorm without one); got None")
    return _norm(x, residual, weight, eps, weight_offset, y, y_dtype, fp8, group_size, fp8_format, fp8_max,
                 amax_floor, scale_format, scale_layout, quantize_rounded)


def rmsnorm(x, weight, *, eps=1e-6, weight_offset=0.0, y=True, y_dtype=None, fp8=False, group_size=128,
            fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32", scale_layout="row",
            quantize_rounded=False):
    """gatednorm.rmsnorm (docs/ops.md §3) as one XLA custom call: NormOutputs(y, q, scales, None)."""
    return _norm(x, None, weight, eps, weight_offset, y, y_dtype, fp8, group_size, fp8_format, fp8_max, amax_floor,
                 scale_format, scale_layout, quantize_rounded)


def _norm(x, residual, weight, eps, weight_offset, y, y_dtype, fp8, group_size, fp8_format, fp8_max, amax_floor,
          scale_format, scale_layout, quantize_rounded):
    if weight is None:
        raise argument_error("weight: required (the [hidden] norm weight); got None")
    want_y, want_q = ops_fp8._norm_wants(y, fp8, quantize_rounded=quantize_rounded)
    base = ops_fp8._ADD_ENTRY if residual is not None else ops_fp8._RMSNORM_ENTRY
    prm, fmt, sfmt, g = ops_fp8._norm_options(base, eps, weight_offset, False, group_size, fp8_format, fp8_max,
                                              amax_floor, scale_format, scale_layout, quantize_rounded)
    ydt = ops_fp8._norm_y_dtype(y_dtype, want_y)
    shape = _x(x).shape
    tok, row = tuple(shape[:-1]), (shape[-1] if len(shape) else 0)
    c = _Call(_ADD, base.with_outputs(ops_fp8._OUT_OF_PLACE_OUTPUTS) if residual is not None else base,
              untokened=(2,))
    c.operand(x)
    c.operand(residual)  # the sum goes to residual_out, aliased to residual's buffer
    c.operand(weight)
    c.result(None if residual is None else residual.shape, None if residual is None else residual.dtype)
    c.result(shape if want_y else None, (x.dtype if ydt is None else _jnp_dtype(ydt)) if want_y else None)
    _quant_results(c, tok, row, fmt, sfmt, g, scale_layout, want_q)
    outs = list(c.run(prm, aliases={1: 0} if residual is not None else None))
    res = outs.pop(0) if residual is not None else None
    yv = outs.pop(0) if want_y else None
    q, sc = (outs[0], outs[1]) if want_q else (None, None)
    return ops_fp8.NormOutputs(yv, q, sc, res)


def group_quant_fp8(x, *, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32",
                    scale_layout="row"):
    """gatednorm.group_quant_fp8 (docs/ops.md §3) as one XLA custom call; returns (q, scales)."""
    prm, fmt, sfmt, g = ops_fp8._gq_options(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout,
                                            False)
    shape = _x(x).shape
    c = _Call(_GQ, ops_fp8._GQ_ENTRY)
    c.operand(x)
    _quant_results(c, tuple(shape[:-1]), shape[-1] if len(shape) else 0, fmt, sfmt, g, scale_layout)
    return tuple(c.run(prm))


# ---------------------------------------------------------------------------- W4A16 (§4)
@jax.tree_util.register_pytree_node_class
class W4A16Arrays:
    """A W4A16Weight's parts as JAX arrays, as the C GEMM reads them (``w4a16_weight`` makes
    one): ``qweight``, ``scales``, ``zeros`` (None where the weight has none: zeros of a
    symmetric weight; scales and zeros of a tiled one), ``perm`` (int32 ``[K]`` for act-order
    weights, else None) and ``meta``, the weight's params as the ints
    ``gatednorm.w4a16.META_FIELDS`` names.  A pytree: the arrays are its leaves and ``meta``
    its static part, so it passes through ``jax.jit`` as an argument (a model's params)."""

    def __init__(self, qweight, scales, zeros, perm, meta):
        self.qweight, self.scales, self.zeros, self.perm = qweight, scales, zeros, perm
        self.meta = w4a16.meta_ints(meta)  # checked, not converted: int() took 48.9 and '48' (review)

    def tree_flatten(self):
        return (self.qweight, self.scales, self.zeros, self.perm), self.meta

    @classmethod
    def tree_unflatten(cls, meta, children):
        return cls(*children, meta)

    def __repr__(self):
        return "W4A16Arrays(%s)" % ", ".join("%s=%d" % fm for fm in zip(w4a16.META_FIELDS, self.meta))


def w4a16_weight(w, device=None) -> W4A16Arrays:
    """W4A16Weight ``w`` as JAX arrays for ``w4a16_matmul``: a host weight's arrays (plain, or
    tiled by ``prepack_host``) copied to ``device`` (a jax.Device; None: JAX's default), a GPU
    weight's tiled buffer (``w.to("cuda:0")``) shared through DLPack on its GPU."""
    if not isinstance(w, w4a16.W4A16Weight):
        raise argument_error("w: expected a gatednorm.W4A16Weight, got %s" % type(w).__name__)
    meta = w4a16.weight_meta(w)
    packed = w._packed
    if packed is None:
        parts = [None if a is None else jax.device_put(a, device) for a in (w.q, w.scales, w.zeros)]
    elif isinstance(packed, np.ndarray):
        parts = [jax.device_put(packed, device), None, None]
    else:  # a DeviceArray on a GPU: its buffer, not a copy
        parts = [jax.dlpack.from_dlpack(packed), None, None]
    perm = None if w.perm is None else jax.device_put(w.perm.astype(np.int32), device)
    return W4A16Arrays(*parts, perm, meta)


def _workspace_bytes(prm, m):
    """The split-K workspace a tiled weight's GEMM of m rows needs: the most any of this
    host's GPUs asks (the device the call lands on is XLA's choice; the host needs none)."""
    if prm.layout != w4a16.TILED:
        return 0
    from . import device_count

    gpu = _ffi.lib().gatednorm_gpu_device_type()
    return max((w4a16.workspace_bytes(prm, m, (gpu, i)) for i in range(device_count())), default=0)


def w4a16_matmul(a, w, bias=None, *, out_dtype=None):
    """gatednorm.w4a16_matmul (docs/ops.md §4) as one XLA custom call: ``a @ dequant(W)
    (+ bias)`` for ``a [M, K]`` bf16 / fp16 and ``w`` a W4A16Arrays (``w4a16_weight``);
    returns ``[M, N]`` of ``out_dtype`` (default a's).  Act-order weights: a's columns are
    taken in the weight's order (``w.perm``) first.  A tiled weight's GPU workspace is a
    result of the call, dropped."""
    if not isinstance(w, W4A16Arrays):
        raise argument_error("w: expected a gatednorm.jax_ops.W4A16Arrays (jax_ops.w4a16_weight(W4A16Weight)), got %s"
                             % type(w).__name__)
    prm = w4a16.params_from_meta(w.meta)
    odt = ops_fp8._float_out_dtype(out_dtype, "out_dtype", "the output", None, None)
    shape = _x(a).shape
    if len(shape) != 2 or shape[1] != prm.k:
        raise argument_error("a: expected [M, K] with K = %d (the weight's), got shape %s" % (prm.k, list(shape)))
    if w.perm is not None:
        a = jnp.take(a, w.perm, axis=1)
    m = shape[0]
    c = _Call(_W4A16, w4a16._GEMM, untokened=(1, 2, 3, 4, 6))
    for part in (a, w.qweight, w.scales, w.zeros, bias):
        c.operand(part)
    c.result((m, prm.n), a.dtype if odt is None else _jnp_dtype(odt))
    ws = _workspace_bytes(prm, m)
    c.result((ws,) if ws else None, np.uint8)
    return c.run(prm)[0]
