"""gatednorm's ops inside ``jax.jit``, through XLA's FFI: ``import gatednorm.jax_ops`` (it needs
jax; ``import gatednorm`` never imports it) gives

    rmsnorm_gated(x, z, weight, ...)                  -> y
    rmsnorm_gated_fp8(x, z, weight, ..., copy_dtype)  -> (q, scales) or (q, scales, y)
    rmsnorm(x, weight, ..., fp8=False)                -> NormOutputs(y, q, scales, None)
    add_rmsnorm(x, residual, weight, ..., fp8=False)  -> NormOutputs(y, q, scales, residual)
    group_quant_fp8(x, ...)                           -> (q, scales)

with the keywords of the functions of the same names (docs/ops.md) minus output arrays,
``stream`` and ``pdl``; JAX arrays are values, so add_rmsnorm returns the new residual (XLA
may update the old buffer in place when the caller donates it).  Each is one XLA custom call
(``jax.ffi.ffi_call``) that runs the library's C entry on XLA's own buffers and, on a GPU,
XLA's stream: no host round trip, unlike ``jax.pure_callback``.  Scales are row-major (JAX
arrays have no strides; other layouts are refused by name).  Under ``jax.vmap`` the calls run
one batch element at a time.

How: one FFI handler for every op, a cffi callback into Python (no compiled glue), written
against XLA's C API (major version 0), registered for the host and for the library's GPU
platform.  The wrapper checks the options with the Python functions' own code, then passes
three attributes: ``entry`` (which C entry), ``slots`` (for each of its tensor arguments: an
FFI operand, a result, or NULL) and ``params`` (the params struct's bytes).  The handler
answers XLA's metadata query, reads the buffers (dense, row-major), the stream and the
device, calls the entry and turns a refusal into an XLA error carrying the library's message.
"""

from __future__ import annotations

import ctypes
import threading

import cffi
import jax
import jax.numpy as jnp
import numpy as np

from . import _dtypes, _ffi, _runtime, ops, ops_fp8
from ._ffi import argument_error, ffi

__all__ = ["rmsnorm_gated", "rmsnorm_gated_fp8", "rmsnorm", "add_rmsnorm", "group_quant_fp8", "TARGET"]

TARGET = "gatednorm_call"

# XLA's FFI C API (xla/ffi/api/c_api.h, major version 0): the structs this handler reads,
# declared here in the API's own layout (enums are C ints).  Fields of the API table it does
# not call are opaque pointers, kept for their offsets.
_XLA_CDEF = """
typedef struct XLA_FFI_Extension_Base {
    size_t struct_size; int type; struct XLA_FFI_Extension_Base *next;
} XLA_FFI_Extension_Base;
typedef struct { size_t struct_size; XLA_FFI_Extension_Base *extension_start; int major_version; int minor_version; }
    XLA_FFI_Api_Version;
typedef struct XLA_FFI_Error XLA_FFI_Error;
typedef struct { size_t struct_size; XLA_FFI_Extension_Base *extension_start; const char *message; int errc; }
    XLA_FFI_Error_Create_Args;
typedef struct { size_t struct_size; XLA_FFI_Extension_Base *extension_start; void *ctx; void *stream; }
    XLA_FFI_Stream_Get_Args;
typedef struct { size_t struct_size; XLA_FFI_Extension_Base *extension_start; void *ctx; int32_t device_ordinal; }
    XLA_FFI_DeviceOrdinal_Get_Args;
typedef struct {
    size_t struct_size; XLA_FFI_Extension_Base *extension_start;
    XLA_FFI_Api_Version api_version; const void *internal_api;
    XLA_FFI_Error *(*error_create)(XLA_FFI_Error_Create_Args *);
    void *error_get_message; void *error_destroy; void *handler_register;
    XLA_FFI_Error *(*stream_get)(XLA_FFI_Stream_Get_Args *);
    void *type_register; void *execution_context_get; void *state_set; void *state_get;
    void *device_memory_allocate; void *device_memory_free; void *thread_pool_schedule;
    void *thread_pool_num_threads; void *future_create; void *future_set_available; void *future_set_error;
    void *run_id_get;
    XLA_FFI_Error *(*device_ordinal_get)(XLA_FFI_DeviceOrdinal_Get_Args *);
} XLA_FFI_Api;
typedef struct { size_t struct_size; XLA_FFI_Extension_Base *extension_start; int dtype; void *data; int64_t rank;
                 int64_t *dims; } XLA_FFI_Buffer;
typedef struct { const char *ptr; size_t len; } XLA_FFI_ByteSpan;
typedef struct { int dtype; void *value; } XLA_FFI_Scalar;
typedef struct { int dtype; size_t size; void *data; } XLA_FFI_Array;
typedef struct { size_t struct_size; XLA_FFI_Extension_Base *extension_start; int64_t size; int *types; void **args; }
    XLA_FFI_Args;
typedef struct { size_t struct_size; XLA_FFI_Extension_Base *extension_start; int64_t size; int *types; void **rets; }
    XLA_FFI_Rets;
typedef struct { size_t struct_size; XLA_FFI_Extension_Base *extension_start; int64_t size; int *types;
                 XLA_FFI_ByteSpan **names; void **attrs; } XLA_FFI_Attrs;
typedef struct { size_t struct_size; XLA_FFI_Extension_Base *extension_start; const XLA_FFI_Api *api; void *ctx;
                 int stage; XLA_FFI_Args args; XLA_FFI_Rets rets; XLA_FFI_Attrs attrs; void *future; }
    XLA_FFI_CallFrame;
typedef struct { int64_t type_id; } XLA_FFI_TypeId;
typedef struct { size_t struct_size; XLA_FFI_Api_Version api_version; uint32_t traits; XLA_FFI_TypeId state_type_id; }
    XLA_FFI_Metadata;
typedef struct { XLA_FFI_Extension_Base extension_base; XLA_FFI_Metadata *metadata; } XLA_FFI_Metadata_Extension;
"""
_xffi = cffi.FFI()
_xffi.cdef(_XLA_CDEF)
_XNULL = _xffi.NULL
_METADATA_EXTENSION, _EXECUTE = 1, 3
_INVALID_ARGUMENT, _INTERNAL = 3, 13
_API_MAJOR, _API_MINOR = 0, 1  # what this handler reads: nothing newer than the first 0.x API

# XLA's element types (xla_data.proto's PrimitiveType) -> the library's (DLPack code, bits).
_XLA_DTYPES = {16: (4, 16), 10: (2, 16), 11: (2, 32), 6: (1, 8), 4: (0, 32), 2: (0, 8)}
_XLA_FP8 = {20: "float8_e4m3fn", 25: "float8_e4m3fnuz"}

# The C entries the handler calls, by the `entry` attribute: (name, tensor arguments).
_ENTRIES = (("gatednorm_rmsnorm_gated", 4), ("gatednorm_rmsnorm_gated_fp8", 6), ("gatednorm_add_rmsnorm", 7),
            ("gatednorm_group_quant_fp8", 3))
_GATED, _GATED_FP8, _ADD, _GQ = range(4)
_NULL_SLOT = -1  # a slot code: >= 0 operand i, <= -2 result -(code + 2)


def _dl_of(xla_dtype):
    dl = _XLA_DTYPES.get(xla_dtype)
    if dl is None and xla_dtype in _XLA_FP8:
        dl = _XLA_DTYPES[xla_dtype] = _dtypes.dl_lookup(getattr(_dtypes, _XLA_FP8[xla_dtype]))
    if dl is None:
        raise argument_error("an operand of XLA element type %d, which gatednorm does not take" % xla_dtype)
    return dl


# Types resolved once (a cast by name parses it each time: ~1 us).  Primitive pointer types
# (void *, int64_t *) are one type across cffi instances, so XLA's pointers go straight into
# the library's descriptors.
_T_SCALAR = _xffi.typeof("XLA_FFI_Scalar *")
_T_ARRAY = _xffi.typeof("XLA_FFI_Array *")
_T_BUFFER = _xffi.typeof("XLA_FFI_Buffer *")
_T_I64 = _xffi.typeof("int64_t *")
_T_METADATA = _xffi.typeof("XLA_FFI_Metadata_Extension *")
_T_ERROR_ARGS = _xffi.typeof("XLA_FFI_Error_Create_Args *")
_T_STREAM_ARGS = _xffi.typeof("XLA_FFI_Stream_Get_Args *")
_T_ORDINAL_ARGS = _xffi.typeof("XLA_FFI_DeviceOrdinal_Get_Args *")
_SIZES = {t: _xffi.sizeof(t.item) for t in (_T_ERROR_ARGS, _T_STREAM_ARGS, _T_ORDINAL_ARGS)}
_ORDINAL_END = _xffi.offsetof("XLA_FFI_Api", "device_ordinal_get") + _xffi.sizeof("void *")


def _handler(platform):
    """The FFI handler for ``platform`` ("cpu" or the GPU's): a function of the call frame."""
    gpu = platform != "cpu"

    def handle(frame):
        api = frame.api
        try:
            ext = frame.extension_start
            while ext != _XNULL:  # XLA asks each handler its API version and traits first
                if ext.type == _METADATA_EXTENSION:
                    md = _xffi.cast(_T_METADATA, ext).metadata
                    md.api_version.major_version, md.api_version.minor_version = _API_MAJOR, _API_MINOR
                    md.traits = 0
                    return _XNULL
                ext = ext.next
            if frame.stage != _EXECUTE:
                return _XNULL
            _execute(frame, api, gpu)
            return _XNULL
        except BaseException as e:  # an XLA error carrying the message; nothing may escape a callback
            msg = _xffi.new("char[]", str(e).encode("utf-8", "replace"))
            args = _xffi.new(_T_ERROR_ARGS, {"struct_size": _SIZES[_T_ERROR_ARGS], "message": msg,
                                              "errc": _INVALID_ARGUMENT if isinstance(e, _ffi.GatedNormError)
                                              else _INTERNAL})
            return api.error_create(args)  # XLA copies the message

    return handle


def _execute(frame, api, gpu):
    a = frame.attrs  # sorted by name: entry, params, slots
    names = [_xffi.string(a.names[i].ptr, a.names[i].len) for i in range(a.size)]
    if names != [b"entry", b"params", b"slots"]:
        raise argument_error("attributes: expected entry, params and slots, got %s" % names)
    entry = _xffi.cast(_T_I64, _xffi.cast(_T_SCALAR, a.attrs[0]).value)[0]
    pa, sa = _xffi.cast(_T_ARRAY, a.attrs[1]), _xffi.cast(_T_ARRAY, a.attrs[2])
    name, fn, ntensors = _entry(entry)
    if sa.size != ntensors:
        raise argument_error("slots: %d for %s's %d tensors" % (sa.size, name, ntensors))
    slots = _xffi.cast(_T_I64, sa.data)
    stream, devtype, devid = ffi.NULL, _runtime.CPU, 0
    if gpu:
        st = _xffi.new(_T_STREAM_ARGS, {"struct_size": _SIZES[_T_STREAM_ARGS], "ctx": frame.ctx})
        if api.stream_get(st) != _XNULL:
            raise RuntimeError("XLA_FFI_Stream_Get failed")
        stream, devtype = st.stream, _ffi.lib().gatednorm_gpu_device_type()
        if api.struct_size >= _ORDINAL_END:
            da = _xffi.new(_T_ORDINAL_ARGS, {"struct_size": _SIZES[_T_ORDINAL_ARGS], "ctx": frame.ctx})
            if api.device_ordinal_get(da) == _XNULL:
                devid = da.device_ordinal
    descs = ffi.new("gatednorm_tensor[]", ntensors)
    tensors = []
    for i in range(ntensors):
        code = slots[i]
        if code == _NULL_SLOT:
            tensors.append(ffi.NULL)
            continue
        b = _xffi.cast(_T_BUFFER, frame.args.args[code] if code >= 0 else frame.rets.rets[-(code + 2)])
        t = descs[i]
        t.data = b.data
        t.device.device_type, t.device.device_id = devtype, devid
        t.ndim = nd = b.rank
        t.dtype.code, t.dtype.bits = _dl_of(b.dtype)
        t.dtype.lanes = 1
        stride = 1
        for d in range(nd - 1, -1, -1):  # XLA's default layout: dense, row-major
            n = b.dims[d]
            t.shape[d], t.strides[d] = n, stride
            stride *= n
        tensors.append(descs + i)
    params = ffi.NULL
    if pa.size:
        params = ffi.new("char[]", pa.size)  # the params struct as the wrapper built it, aligned
        ffi.memmove(params, pa.data, pa.size)
        params = ffi.cast("void *", params)
    _ffi.check(fn(*tensors, params, stream), name)


_ENTRY_FNS: dict = {}


def _entry(i):
    e = _ENTRY_FNS.get(i)
    if e is None:
        name, ntensors = _ENTRIES[i]
        e = _ENTRY_FNS[i] = (name[len("gatednorm_"):], getattr(_ffi.lib(), name), ntensors)
    return e


# ---------------------------------------------------------------------------- registration
_REGISTERED = []  # (callback, capsule) kept alive: XLA holds the raw pointers
_LOCK = threading.Lock()


def _register():
    with _LOCK:
        if _REGISTERED:
            return
        platforms = ["cpu"]
        from . import device_count

        if device_count() > 0:
            platforms.append("ROCM" if _ffi.lib().gatednorm_gpu_device_type() == _runtime.ROCM else "CUDA")
        for p in platforms:
            cb = _xffi.callback("XLA_FFI_Error *(XLA_FFI_CallFrame *)", _handler(p))
            capsule = jax.ffi.pycapsule(ctypes.c_void_p(int(_xffi.cast("uintptr_t", cb))))
            jax.ffi.register_ffi_target(TARGET, capsule, platform=p)
            _REGISTERED.append((cb, capsule))


def _call(entry, slots, prm, operands, results):
    """One custom call: operands (jax arrays, None dropped by the caller), results
    (ShapeDtypeStructs), slots (a code per C tensor argument), prm (a params cdata or None)."""
    _register()
    params = np.frombuffer(ffi.buffer(prm), np.uint8).copy() if prm is not None else np.zeros(0, np.uint8)
    call = jax.ffi.ffi_call(TARGET, results, vmap_method="sequential")
    return call(*operands, entry=np.int64(entry), slots=np.asarray(slots, np.int64), params=params)


class _Slots:
    """The slots of one call, in the C entry's argument order: operands and results numbered
    as they are added."""

    def __init__(self):
        self.codes, self.operands, self.results = [], [], []

    def operand(self, a):
        if a is None:
            self.codes.append(_NULL_SLOT)
        else:
            self.codes.append(len(self.operands))
            self.operands.append(a)

    def result(self, shape, dtype):
        if shape is None:
            self.codes.append(_NULL_SLOT)
        else:
            self.codes.append(-(len(self.results) + 2))
            self.results.append(jax.ShapeDtypeStruct(tuple(shape), dtype))


def _jnp_dtype(dt):
    return jnp.dtype(np.dtype(dt))


def _row_layout(scale_layout):
    if scale_layout != "row":
        raise argument_error("scale_layout: %r; JAX arrays have no strides, so gatednorm.jax_ops writes row-major "
                             "scales only ('row'; transpose them in JAX)" % (scale_layout,))


def _quant_shapes(tok, row, fmt, sfmt, g):
    k = row // g if g > 0 else 0
    cols = (k + 3) // 4 if sfmt == 3 else k
    q_dt = _jnp_dtype(getattr(_dtypes, ops_fp8._Q_NAMES[fmt]))
    s_dt = _jnp_dtype(getattr(_dtypes, ops_fp8._SCALE_NAMES[sfmt]))
    return (tuple(tok) + (row,), q_dt), (tuple(tok) + (cols,), s_dt)


# ---------------------------------------------------------------------------- the ops
def rmsnorm_gated(x, z, weight, *, eps=1e-6, norm_before_gate=True, activation="silu", weight_offset=0.0,
                  group_size=None, out_dtype=None):
    """gatednorm.rmsnorm_gated (docs/ops.md §1) as one XLA custom call; returns y."""
    if weight is None:
        raise argument_error("weight: required (the [D] norm weight); got None")
    prm = ops._params(eps, norm_before_gate, activation, weight_offset, group_size, False)
    odt = ops_fp8._float_out_dtype(out_dtype, "out_dtype", "the output", None, None)
    s = _Slots()
    s.operand(x)
    s.operand(z)
    s.operand(weight)
    s.result(x.shape, x.dtype if odt is None else _jnp_dtype(odt))
    return _call(_GATED, s.codes, prm, s.operands, s.results)[0]


def rmsnorm_gated_fp8(x, z, weight, *, eps=1e-6, norm_before_gate=True, activation="silu", weight_offset=0.0,
                      head_dim=None, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10,
                      scale_format="fp32", scale_layout="row", quantize_rounded=False, copy_dtype=None):
    """gatednorm.rmsnorm_gated_fp8 (docs/ops.md §2) as one XLA custom call; returns (q, scales),
    or (q, scales, y) with ``copy_dtype``."""
    if weight is None:
        raise argument_error("weight: required (the [D] norm weight); got None")
    _row_layout(scale_layout)
    prm, fmt, sfmt, g, hd = ops_fp8._gated_options(group_size, fp8_format, fp8_max, amax_floor, scale_format,
                                                   scale_layout, quantize_rounded, head_dim, norm_before_gate,
                                                   activation, eps, weight_offset, False)
    cdt = ops_fp8._float_out_dtype(copy_dtype, "copy_dtype", "the copy", None, None)
    tok, row = ops_fp8._token_dims(x.shape, hd)
    (qs, qdt), (ss, sdt) = _quant_shapes(tok, row, fmt, sfmt, g)
    s = _Slots()
    for a in (x, z, weight):
        s.operand(a)
    s.result(qs, qdt)
    s.result(ss, sdt)
    s.result(None if cdt is None else x.shape, None if cdt is None else _jnp_dtype(cdt))
    return tuple(_call(_GATED_FP8, s.codes, prm, s.operands, s.results))


def add_rmsnorm(x, residual, weight, *, eps=1e-6, weight_offset=0.0, y=True, y_dtype=None, fp8=False, group_size=128,
                fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32", scale_layout="row",
                quantize_rounded=False):
    """gatednorm.add_rmsnorm (docs/ops.md §3) as one XLA custom call: NormOutputs(y, q, scales,
    residual), residual the stored sum x + residual (a new array: JAX arrays are values)."""
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
    from ._call import flag

    if weight is None:
        raise argument_error("weight: required (the [hidden] norm weight); got None")
    want_y, want_q = flag("y", y) == 1, flag("fp8", fp8) == 1
    if not want_y and not want_q:
        raise argument_error("y: no output requested (y=False without fp8=True)")
    if want_q:
        _row_layout(scale_layout)
    entry = ops_fp8._ADD_ENTRY if residual is not None else ops_fp8._RMSNORM_ENTRY
    prm, fmt, sfmt, g = ops_fp8._norm_options(entry, eps, weight_offset, False, group_size, fp8_format, fp8_max,
                                              amax_floor, scale_format, scale_layout, quantize_rounded)
    ydt = ops_fp8._float_out_dtype(y_dtype, "y_dtype", "y", None, None)
    if ydt is not None and not want_y:
        raise argument_error("y_dtype: given with y=False (no y is written)")
    tok, row = tuple(x.shape[:-1]), (x.shape[-1] if x.ndim else 0)
    s = _Slots()
    s.operand(x)
    s.operand(residual)  # read only: the sum goes to residual_out
    s.operand(weight)
    s.result(None if residual is None else residual.shape, None if residual is None else residual.dtype)
    s.result(x.shape if want_y else None, (x.dtype if ydt is None else _jnp_dtype(ydt)) if want_y else None)
    (qs, qdt), (ss, sdt) = _quant_shapes(tok, row, fmt, sfmt, g)
    s.result(qs if want_q else None, qdt)
    s.result(ss if want_q else None, sdt)
    outs = list(_call(_ADD, s.codes, prm, s.operands, s.results))
    res = outs.pop(0) if residual is not None else None
    yv = outs.pop(0) if want_y else None
    q, sc = (outs[0], outs[1]) if want_q else (None, None)
    return ops_fp8.NormOutputs(yv, q, sc, res)


def group_quant_fp8(x, *, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32",
                    scale_layout="row"):
    """gatednorm.group_quant_fp8 (docs/ops.md §3) as one XLA custom call; returns (q, scales)."""
    _row_layout(scale_layout)
    prm, fmt, sfmt, g = ops_fp8._gq_options(group_size, fp8_format, fp8_max, amax_floor, scale_format, scale_layout,
                                            False)
    (qs, qdt), (ss, sdt) = _quant_shapes(tuple(x.shape[:-1]), x.shape[-1] if x.ndim else 0, fmt, sfmt, g)
    s = _Slots()
    s.operand(x)
    s.result(qs, qdt)
    s.result(ss, sdt)
    return tuple(_call(_GQ, s.codes, prm, s.operands, s.results))
