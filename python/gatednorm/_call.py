"""The one call path from Python to the C ABI: every op's wrapper ends in one ``Entry`` call.

An op wrapper is its signature, docstring, option checks and::

    _ENTRY = _call.Entry("gatednorm_rmsnorm_gated", "gatednorm_rmsnorm_gated_params",
                         ("x", "z", "weight", "out"), outputs=("out",))
    prm = _ENTRY.params(eps=1e-6, ...)      # a params struct, cached per field values
    _ENTRY(stream, x, z, weight, out, params=prm)

``Entry.__call__`` resolves the launch stream once, then reads each array argument once,
through the adapter of its producer kind, straight into the descriptor memory the C call
reads: a per-thread block of ``gatednorm_tensor`` slots, each filled by one
``struct.pack_into`` (numpy, torch, the CUDA Array Interface, DLPack), or the descriptor a
``gatednorm.DeviceArray`` keeps cached.  No DLPack capsule is made for producers whose fields
can be read directly (numpy, torch, DeviceArray, CAI); DLPack is the path for the rest (JAX,
...).  ``None`` arguments pass NULL.  A failure raises ``GatedNormError`` (an
``InvalidArgumentError``, also a ``ValueError``, for bad arguments) naming the argument; the
C call then has written nothing.

Producer kinds, decided once per Python type (``kind_of``):
  * gatednorm.DeviceArray (and from_pointer views: raw pointers, hip-python ``Pointer``);
  * numpy ndarrays (bf16/fp8 through ml_dtypes), host memory;
  * torch.Tensor: data_ptr()/shape/stride()/dtype/device read directly;
  * objects with ``__dlpack__``/``__dlpack_device__`` (exact dtype codes);
  * objects with ``__cuda_array_interface__`` (v3: CuPy, numba, hip-python DeviceArray);
  * other objects with ``__array_interface__`` (viewed through numpy).
"""

from __future__ import annotations

import math
import os
import struct
import sys
import threading

import _cffi_backend
import numpy as np

from . import _dtypes, _ffi, _runtime
from ._array import DeviceArray
from ._ffi import DEVICE_ERROR, INVALID_ARGUMENT, OUT_OF_MEMORY, GatedNormError, argument_error, ffi
from ._runtime import integer  # re-exported: the option checks' home is here

__all__ = ["Entry", "New", "flag", "real", "integer", "choice", "empty_like", "unallocated", "torch_allocation_error",
           "kind_of", "resolve_stream", "convert"]

MAX_DIMS = 8
NUMPY, OWN, TORCH, DLPACK, DLPACK_CAI, CAI, ARRAY_IFACE, PROBE, MASKED = range(9)

# gatednorm_tensor as bytes: data, device (type, id), ndim, dtype (code, bits, lanes),
# shape[8], strides[8], byte_offset; one Struct per rank writes a whole descriptor (unused
# shape/stride entries zeroed).  Offsets are checked against the header on first use.
_DESC_BYTES = 160
_PACK = tuple(struct.Struct("=QiiiBBH%dq%dx%dq%dxQ" % (n, 8 * (8 - n), n, 8 * (8 - n))) for n in range(MAX_DIMS + 1))
_SLOTS = 16  # descriptor slots per thread: more than any op's argument count
_INDICES = tuple(range(_SLOTS))
_NULL = ffi.NULL


def _check_layout():
    _ffi.lib()
    want = {"data": 0, "device": 8, "ndim": 16, "dtype": 20, "shape": 24, "strides": 88, "byte_offset": 152}
    got = {f: ffi.offsetof("gatednorm_tensor", f) for f in want}
    if got != want or ffi.sizeof("gatednorm_tensor") != _DESC_BYTES:  # pragma: no cover - a header change
        raise GatedNormError(-6, "gatednorm_tensor layout %s differs from the call layer's %s" % (got, want))


class _Scratch:
    """One thread's descriptor slots (cdata array, a writable view of its bytes, and a
    pointer to each slot)."""

    __slots__ = ("arr", "mv", "ptrs", "busy")

    def __init__(self):
        self.arr = ffi.new("gatednorm_tensor[%d]" % _SLOTS)
        self.mv = memoryview(ffi.buffer(self.arr))
        self.ptrs = tuple(self.arr + i for i in range(_SLOTS))
        self.busy = False


_tls = threading.local()
_layout_checked = False


def _ensure_layout() -> None:
    """Parses the header (loading the library) and checks the descriptor layout, once."""
    global _layout_checked
    if not _layout_checked:
        _check_layout()
        _layout_checked = True


def _scratch() -> _Scratch:
    _ensure_layout()
    sc = _Scratch()
    _tls.sc = sc
    return sc


def _fail(name, what):
    raise argument_error("%s: %s" % (name, what))


# ---------------------------------------------------------------------------- producer kinds
_kind_cache: dict = {np.ndarray: NUMPY, DeviceArray: OWN}


def _classify_type(tp) -> int:
    if issubclass(tp, np.ma.MaskedArray):
        return MASKED  # its mask would be ignored: refused (CAI's 'mask' is refused too)
    if issubclass(tp, np.ndarray):
        return NUMPY
    if issubclass(tp, DeviceArray):
        return OWN
    torch = sys.modules.get("torch")
    if torch is not None and issubclass(tp, torch.Tensor):
        return TORCH
    if hasattr(tp, "__dlpack__") and hasattr(tp, "__dlpack_device__"):
        return DLPACK_CAI if hasattr(tp, "__cuda_array_interface__") else DLPACK
    if hasattr(tp, "__cuda_array_interface__"):
        return CAI
    if hasattr(tp, "__array_interface__"):
        return ARRAY_IFACE
    # The protocols may live in the instance (hip-python's DeviceArray keeps its
    # __cuda_array_interface__ in the instance __dict__): look at each instance.
    return PROBE


def kind_of(obj) -> int:
    tp = type(obj)
    k = _kind_cache.get(tp)
    if k is None:
        k = _kind_cache[tp] = _classify_type(tp)
    if k == PROBE:
        if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
            return DLPACK
        if hasattr(obj, "__cuda_array_interface__"):
            return CAI
        if hasattr(obj, "__array_interface__"):
            return ARRAY_IFACE
    return k


# ------------------------------------------------------------------------------ adapters
# Each writes argument `name` into slot i of the scratch block and returns the pointer the C
# call takes; `s` is the launch stream, `hold` collects what must outlive the C call.
def _byte_to_elem_strides(name, strides, itemsize):
    es = []
    for st in strides:
        q, r = divmod(st, itemsize)
        if r:
            _fail(name, "byte strides %s are not multiples of the element size %d" % (tuple(strides), itemsize))
        es.append(q)
    return es


_contig_cache: dict = {}


def _contig(shape: tuple):
    """C-contiguous strides (elements) of ``shape``, cached: shapes repeat call to call."""
    st = _contig_cache.get(shape)
    if st is None:
        acc, lst = 1, []
        for n in reversed(shape):
            lst.append(acc)
            acc *= max(int(n), 1)
        lst.reverse()
        st = tuple(lst)
        if len(_contig_cache) > 4096:
            _contig_cache.clear()
        _contig_cache[shape] = st
    return st


def _rank(name, nd):
    if nd > MAX_DIMS:
        _fail(name, "%d dims; at most %d are supported" % (nd, MAX_DIMS))
    return _PACK[nd]


_NP_TO_DL = _dtypes.NP_TO_DL


# An array's address, through the buffer protocol, as a `char[]` cdata (it compares, hashes
# and converts to `void *` by address, like the header's ffi's cdata).  The cheapest forms
# cffi has (~15 ns less per array than the FFI method with a ctype): for an input, the
# from_buffer method of a C-level FFI (what a prebuilt _cffi_abi's ffi is; cffi.FFI wraps it
# in Python) with the buffer alone; for an output, the module function with the ctype and
# require_writable, which refuses a read-only buffer.
_BUFFERS = _cffi_backend.FFI()
_from_buffer = _BUFFERS.from_buffer  # (obj) or (ctype, obj, require_writable)
_from_writable = _cffi_backend.from_buffer  # (ctype, obj, require_writable)
_CHAR_ARRAY = _BUFFERS.typeof("char[]")  # a built-in type: no header needed
_FB_ERRORS = (ValueError, TypeError, BufferError)  # what from_buffer raises for arrays it cannot export
_TENSOR_PTR = "gatednorm_tensor *"


# Descriptors of C-contiguous numpy arrays, keyed by address: address -> (shape, dtype,
# descriptor).  A descriptor is a function of (address, shape, dtype) for a C-contiguous
# array, so an entry is used only when all three, read from the array in the same call (the
# address through the buffer protocol), equal its own.  A cdata key hashes and compares by
# the address it points to, so the lookup takes the `char[]` buffer of this call as is; the
# key kept is a plain `void *` (the buffer itself holds an export that would pin the
# array).  Nothing is keyed by id(): ids are reused after GC.
_np_descs: dict = {}


def _no_dlpack_dtype(name, dt):
    if dt.byteorder not in "=|" and dt.newbyteorder("=") in _NP_TO_DL:
        _fail(name, "numpy dtype %s is byte-swapped; convert it to native order first (a.astype(a.dtype.newbyteorder('=')))"
              % dt.str)
    # named as numpy names it, with its type string where that differs: dt.str alone read
    # "<f16" for float128 (an accepted dtype's name, float16) and "<f1" for ml_dtypes' float8_e5m2
    label = str(dt) if str(dt) == dt.str else "%s (%s)" % (dt, dt.str)
    _fail(name, "numpy dtype %s has no DLPack equivalent" % label)


def _np_desc(a, name, buf):
    """The descriptor of C-contiguous numpy array ``a`` whose buffer (this call's) is ``buf``;
    made and entered in ``_np_descs`` when that has none for this address, shape and dtype."""
    shape, dt = a.shape, a.dtype
    d = _np_descs.get(buf)
    if d is not None and d[0] == shape and d[1] is dt:
        return d[2]
    dl = _NP_TO_DL.get(dt) or _dtypes.dl_lookup(dt)
    if dl is None:
        _no_dlpack_dtype(name, dt)
    _ensure_layout()  # an Entry's numpy fast path can come here before the entry loaded
    t = ffi.new(_TENSOR_PTR)
    _rank(name, len(shape)).pack_into(ffi.buffer(t), 0, 0, 1, 0, len(shape), dl[0], dl[1], 1, *shape, *_contig(shape), 0)
    t.data = buf
    if len(_np_descs) >= 1024:
        _np_descs.clear()
    _np_descs[ffi.cast("void *", buf)] = (shape, dt, t)
    return t


def _packed_args(entry, arrays, bufs, params):
    """An all-numpy call's arguments as one ``<function>_args`` struct (``Entry(packed=True)``):
    each array's descriptor (``_np_desc``, in order, so the first bad one is named) and
    ``params``, with a NULL stream, entered in the entry's cache under the arrays' addresses
    (this call's buffers) and ``params``, with each array's shape and dtype, which a hit
    must match as ``_np_descs``'s do.  Returns (struct, descriptors): the struct holds raw
    pointers, so the caller keeps the descriptors until the library returned."""
    ts = tuple(_np_desc(a, name, b) for a, name, b in zip(arrays, entry.names, bufs))
    pk = ffi.new(entry.function + "_args *", ts + (params, _NULL))
    cache = entry._packed_cache
    # The key keeps plain `void *` addresses (a buffer would pin its array) and params itself
    # (alive while the entry is, so no other params struct can have its address).
    cache[tuple(ffi.cast("void *", b) for b in bufs) + (params,)] = (
        tuple(a.shape for a in arrays) + tuple(a.dtype for a in arrays) + (pk, ts))
    return pk, ts


# A packed struct costs ~3-5 us to make and saves ~0.2 us a call: made once the same
# arguments came _PACK_AFTER times, kept while the cache has room (no clear-all: a program
# cycling through more combinations than it holds would remake them on every call, review),
# and the cache dropped only when _SEEN_MAX new argument keys have come since (the program's
# arguments have moved on).
_PACK_AFTER = 4
_PACKED_MAX = 1024
_SEEN_MAX = 4096


def _packed_seen(entry, key, arrays, bufs, params):
    """After a packed entry's six-argument call on a cache miss: counts the arguments'
    ``key`` (this call's buffers and params; only its hash is kept, which pins nothing, and
    a collision merely makes a struct early) and makes their struct (``_packed_args``) at
    the _PACK_AFTER-th time while the cache has room."""
    seen = entry._packed_seen
    h = hash(key)
    n = seen.get(h, 0) + 1
    if n < _PACK_AFTER:
        if len(seen) >= _SEEN_MAX:
            seen.clear()
            if len(entry._packed_cache) >= _PACKED_MAX:
                entry._packed_cache.clear()
        seen[h] = n
        return
    seen.pop(h, None)  # (pop: another thread may have taken it meanwhile)
    if len(entry._packed_cache) < _PACKED_MAX or key in entry._packed_cache:  # (a key's arrays reshaped)
        _packed_args(entry, arrays, bufs, params)


def _from_numpy(a, name, writable, sc, i, s, hold):
    try:
        # C-contiguous: the buffer protocol hands over the address (and refuses a read-only
        # output) several times faster than __array_interface__ builds its dict.
        buf = _from_buffer(_CHAR_ARRAY, a, writable)
    except _FB_ERRORS as e:
        if writable and not a.flags.writeable:
            _fail(name, "numpy array is read-only")
        if a.flags.c_contiguous:
            raise argument_error("%s: the buffer of this numpy array cannot be read: %s" % (name, e)) from None
        return _from_numpy_strided(a, name)
    return _np_desc(a, name, buf)


def _from_numpy_strided(a, name):
    dl = _NP_TO_DL.get(a.dtype) or _dtypes.dl_lookup(a.dtype)
    if dl is None:
        _no_dlpack_dtype(name, a.dtype)
    shape = a.shape
    t = ffi.new(_TENSOR_PTR)
    _rank(name, len(shape)).pack_into(ffi.buffer(t), 0, a.__array_interface__["data"][0], 1, 0, len(shape),
                                      dl[0], dl[1], 1, *shape, *_byte_to_elem_strides(name, a.strides, a.dtype.itemsize), 0)
    return t


_torch_state = None  # (dtype table, gpu device type, current-stream function, is_grad_enabled, version bump of a list)


def _torch():
    global _torch_state
    if _torch_state is None:
        torch = sys.modules["torch"]
        gpu = _runtime.ROCM if getattr(torch.version, "hip", None) else _runtime.CUDA
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        cur = raw if raw is not None else (lambda i: torch.cuda.current_stream(i).cuda_stream)
        # _increment_version: torch's own hook (torch.autograd.graph.increment_version calls
        # it), given a list: given a tensor it iterates it, making a view of every row (T
        # bumps, ~3 us at [1, 24, 128], O(T) beyond; review); a torch without it gets no bump
        bump = getattr(torch._C, "_increment_version", None) or (lambda ts: None)
        _torch_state = (_dtypes.torch_dtype_table(torch), gpu, cur, torch._C.is_grad_enabled, bump)
    return _torch_state


def _torch_output_under_grad(x, name):
    """A tensor the call writes while torch records autograd: gatednorm has none, so one that
    requires grad is refused (its graph would miss the write: wrong gradients, silently)."""
    if x.requires_grad:
        _fail(name, "a tensor that requires grad, written with torch's grad mode on: gatednorm records no autograd "
                    "(its outputs never require grad); call it under torch.no_grad() or torch.inference_mode(), "
                    "or pass a tensor that does not require grad")


def _torch_written(tensors):
    """After a call that wrote these torch tensors: their version counters bumped, as torch's
    own in-place ops do in every grad mode, so a backward that saved one raises instead of
    using the new values (an inference tensor has no counter: the hook passes it over).  Once
    the call succeeded, not before: a refused call leaves them as they were (review).  One
    hook call for all of a call's outputs."""
    _torch_state[4](tensors)  # set: they were read through _from_torch, which ran _torch()


def _from_torch(x, name, writable, sc, i, s, hold):
    table, gpu, _, grad_on, _ = _torch_state or _torch()
    if writable and grad_on():
        _torch_output_under_grad(x, name)
    dl = table.get(x.dtype)
    dev = x.get_device()  # -1 on the CPU; one call instead of is_cuda + get_device
    if dl is None or (dev < 0 and not x.is_cpu):  # other dtypes or devices: what DLPack says
        return _from_dlpack(x, name, writable, sc, i, s, hold)
    try:
        shape = x.shape  # a nested tensor raises here
        ptr = x.data_ptr()
    except RuntimeError as e:  # no strided storage (sparse, nested, ...): torch's own error names no argument
        _fail(name, "%s, whose data cannot be read as a strided array (%s)" % (_torch_layout_text(x), str(e).split("\n")[0]))
    if x.is_neg():  # its memory holds -x (a lazy negation): read raw it flips every sign (review)
        _fail(name, "a torch tensor with its negative bit set (a lazy negation, e.g. from .conj().imag): its "
                    "memory holds the values negated; pass %s.resolve_neg()" % name)
    pack = _rank(name, len(shape))
    try:
        pack.pack_into(sc.mv, i * _DESC_BYTES, ptr, gpu if dev >= 0 else 1, dev if dev >= 0 else 0,
                       len(shape), dl[0], dl[1], 1, *shape, *x.stride(), 0)
    except Exception as e:  # a jagged nested tensor: its sizes (j1) and strides are no ints (AttributeError, review)
        if getattr(x, "is_nested", False) or x.layout is not _torch_strided():
            _not_strided(x, name)
        _fail(name, "the sizes %s or strides of this torch tensor cannot be read as ints (%s: %s)"
              % (tuple(shape), type(e).__name__, str(e).split("\n")[0]))
    return sc.ptrs[i]


def torch_stream(x) -> int:
    if x.is_cuda:
        st = _torch_state or _torch()
        return st[2](x.get_device())
    return 0


def _dlpack_stream_arg(devtype, s):
    """The ``stream`` argument for a producer's __dlpack__: the consumer's (our launch)
    stream, in DLPack's conventions (CUDA: 1 = legacy default, 0 is never passed;
    ROCm: 0 = default stream; None for host devices)."""
    if devtype == 2 or devtype == 13:
        return s if s else 1
    if devtype == 10:
        return s
    return None


# The DLPack module (its own cffi cdef) loads at the first DLPack argument: `import gatednorm`
# does not parse it.  None until then, so no consumed capsule can exist before.
_dlpack = None


def _dlpack_module():
    global _dlpack
    if _dlpack is None:
        from . import _dlpack as module

        _dlpack = module
    return _dlpack
# Producers whose arrays are immutable but whose DLPack export does not say so: jax (0.4 to
# 0.10 at least) hands out a legacy "dltensor" capsule, without DLPack 1.0's read-only flag,
# even when asked for max_version=(1, 0); writing through it would change a value jax
# treats as constant (and may share between arrays).  Keyed by type.
_IMMUTABLE_MODULES = ("jax", "jaxlib")
_immutable_cache: dict = {}


def _immutable_producer(tp) -> bool:
    r = _immutable_cache.get(tp)
    if r is None:
        r = _immutable_cache[tp] = any(
            (getattr(b, "__module__", None) or "").split(".", 1)[0] in _IMMUTABLE_MODULES for b in tp.__mro__)
    return r


def _from_dlpack(x, name, writable, sc, i, s, hold):
    if writable and _immutable_producer(type(x)):
        _fail(name, "%s.%s arrays are immutable; pass a writable array (numpy, gatednorm.DeviceArray, ...) "
                    "and convert it afterwards" % (type(x).__module__, type(x).__name__))
    try:
        dev = x.__dlpack_device__()
        devtype, devid = int(dev[0]), int(dev[1])
        sa = _dlpack_stream_arg(devtype, s)
        try:
            cap = x.__dlpack__(stream=sa, max_version=(1, 0))
        except TypeError:  # producer predating DLPack 1.0's max_version
            cap = x.__dlpack__(stream=sa) if sa is not None else x.__dlpack__()
        imp = _dlpack_module().consume(cap)
    except GatedNormError:
        raise
    except Exception as e:
        raise argument_error("%s: DLPack export failed: %s: %s" % (name, type(e).__name__, e)) from e
    hold.append(imp)
    if writable and imp.flags & (_dlpack.FLAG_READ_ONLY | _dlpack.FLAG_IS_COPIED):
        _fail(name, "the DLPack producer marked this tensor %s" % (
            "read-only" if imp.flags & _dlpack.FLAG_READ_ONLY else "as a copy (writes would be lost)"))
    d = imp.t
    if (d.device.device_type, d.device.device_id) != (devtype, devid):
        # the stream handed to __dlpack__ was chosen for the device __dlpack_device__ named
        _fail(name, "__dlpack_device__ says device (%d, %d), but its DLPack tensor is on (%d, %d)"
              % (devtype, devid, d.device.device_type, d.device.device_id))
    if d.dtype.lanes != 1:
        _fail(name, "vector dtypes (lanes=%d) are not supported" % d.dtype.lanes)
    nd = d.ndim
    if nd < 0:
        _fail(name, "%d dims" % nd)
    pack = _rank(name, nd)
    if nd and d.shape == ffi.NULL:  # read through, it crashed the process (review)
        _fail(name, "the DLPack tensor has %d dims but a NULL shape" % nd)
    shape = tuple(d.shape[0:nd]) if nd else ()
    estrides = _contig(shape) if (not nd or d.strides == ffi.NULL) else tuple(d.strides[0:nd])
    ptr = int(ffi.cast("uintptr_t", d.data))
    t = ffi.new(_TENSOR_PTR)
    pack.pack_into(ffi.buffer(t), 0, ptr, d.device.device_type, d.device.device_id, nd, d.dtype.code,
                   d.dtype.bits, 1, *shape, *estrides, d.byte_offset)
    return t


_typestr_cache: dict = {}


def _typestr_dtype(name, typestr):
    dt = _typestr_cache.get(typestr)
    if dt is None:
        try:
            dt = np.dtype(typestr)
        except TypeError:
            _fail(name, "unknown __cuda_array_interface__ typestr %r" % (typestr,))
        if dt.kind == "V":
            _fail(name, "__cuda_array_interface__ typestr %r is ambiguous (bf16? fp8?); pass the array "
                        "through DLPack or gatednorm.from_pointer(ptr, shape, dtype)" % (typestr,))
        _typestr_cache[typestr] = dt
    return dt


def cai_stream(cai, name="x") -> int | None:
    """Launch stream implied by a CAI ``stream`` entry (None if the producer gave none),
    checked as an explicit ``stream=`` is (an integer handle, 0 <= h < 2**64)."""
    cs = cai.get("stream")
    if cs is None:
        return None
    if type(cs) is not int and (isinstance(cs, (bool, np.bool_)) or not isinstance(cs, (int, np.integer))):
        raise argument_error("%s: __cuda_array_interface__ stream %r is not an integer handle" % (name, cs))
    cs = int(cs)
    if not 0 <= cs < (1 << 64):
        raise argument_error("%s: __cuda_array_interface__ stream %d is not a pointer value (0 <= handle < 2**64)" % (name, cs))
    return 0 if cs == 1 else cs  # 1: the legacy default stream == our NULL stream


def _from_cai(x, name, writable, sc, i, s, hold, cai=None):
    try:
        return _from_cai_checked(x, name, writable, sc, i, s, hold, cai)
    except GatedNormError:
        raise
    except Exception as e:  # a malformed interface: any field of any type
        raise argument_error("%s: bad __cuda_array_interface__: %s: %s" % (name, type(e).__name__, e)) from None


def _from_cai_checked(x, name, writable, sc, i, s, hold, cai):
    if cai is None:
        cai = x.__cuda_array_interface__
    shape = tuple(cai["shape"])  # a list is allowed; the strides cache wants a tuple
    ptr, ro = cai["data"]
    typestr = cai["typestr"]
    if not isinstance(typestr, str):
        _fail(name, "__cuda_array_interface__ typestr must be a str, got %r" % (typestr,))
    if cai.get("mask") is not None:
        _fail(name, "masked arrays (__cuda_array_interface__ 'mask') are not supported")
    if writable and ro:
        _fail(name, "__cuda_array_interface__ marks this array read-only")
    dt = _typestr_dtype(name, typestr)
    dl = _NP_TO_DL.get(dt) or _dtypes.dl_lookup(dt)
    if dl is None:
        _fail(name, "dtype %s has no DLPack equivalent" % dt)
    strides = cai.get("strides")
    if strides is not None and len(strides) != len(shape):
        _fail(name, "__cuda_array_interface__ has %d strides for %d dims" % (len(strides), len(shape)))
    pack = _rank(name, len(shape))
    estrides = _contig(shape) if strides is None else _byte_to_elem_strides(name, strides, dt.itemsize)
    devtype, devid = _runtime.pointer_device(ptr) if ptr else (1, 0)  # NULL: the op rejects it by name
    pack.pack_into(sc.mv, i * _DESC_BYTES, ptr, devtype, devid, len(shape), dl[0], dl[1], 1, *shape, *estrides, 0)
    # CAI v3: the consumer must order its work after the producer's stream.  Without an
    # event API in the C ABI, a different stream is waited for on the host.
    cs = cai_stream(cai, name)
    if cs is not None and cs != s and devtype not in _runtime.HOST_TYPES:
        if not 0 <= cs < (1 << 64):
            _fail(name, "__cuda_array_interface__ stream %d is not a stream handle" % cs)
        _runtime.synchronize(cs)
    hold.append(x)
    return sc.ptrs[i]


def _wait_pending(a: DeviceArray, sync) -> None:
    """``a``'s memory has a pending library write on another stream than the launch stream:
    wait for it on the host (the C ABI has no events; the library's streams are non-blocking,
    so stream order alone would not do)."""
    ps = sync.stream
    if ps is not None:
        if a._devtype not in _runtime.HOST_TYPES:
            _runtime.synchronize(ps)
        sync.stream = None


def own_tensor(a: DeviceArray, name: str = "array"):
    """The descriptor a DeviceArray keeps (its metadata never changes); errors name ``name``."""
    t = a._t
    if t is None:
        _ensure_layout()
        t = ffi.new("gatednorm_tensor *")
        nd = len(a._shape)
        _rank(name, nd).pack_into(ffi.buffer(t), 0, a._ptr, a._devtype, a._devid, nd, a._dl[0], a._dl[1], 1,
                                     *a._shape, *a._estrides, 0)
        a._t = t
    return t


def _read_only_output(name):
    _fail(name, "a DeviceArray over read-only memory cannot be an output")


def _from_own(x, name, writable, sc, i, s, hold):
    t = x._t or own_tensor(x, name)
    sync = x._sync
    if writable and sync.readonly:
        _read_only_output(name)
    ps = sync.stream
    if ps is not None and ps != s:  # written on another stream and not yet waited for
        _wait_pending(x, sync)
    return t  # a written one's pending stream is recorded by Entry.call once the call succeeded


def _from_array_iface(x, name, writable, sc, i, s, hold):
    try:
        iface = getattr(x, "__array_interface__", None)
    except Exception as e:  # a property that raises: its error named no argument (review)
        raise argument_error("%s: bad __array_interface__: %s: %s" % (name, type(e).__name__, e)) from None
    if isinstance(iface, dict) and iface.get("mask") is not None:  # np.asarray would drop it
        _fail(name, "__array_interface__ with a mask is not supported (the mask would be ignored)")
    try:
        a = np.asarray(x)
    except Exception as e:  # a malformed __array_interface__
        raise argument_error("%s: bad __array_interface__: %s: %s" % (name, type(e).__name__, e)) from None
    if writable and not a.flags.writeable:  # before _from_numpy, whose message says "numpy array"
        _fail(name, "read-only array (its __array_interface__ says so)")
    hold.append(a)
    return _from_numpy(a, name, writable, sc, i, s, hold)


def _from_probe(x, name, writable, sc, i, s, hold):
    k = kind_of(x)
    if k == PROBE:  # none of the protocols whole (e.g. __dlpack__ without __dlpack_device__)
        tp = type(x)
        if tp.__module__.split(".")[0] in _IMMUTABLE_MODULES and "Tracer" in tp.__name__:
            _fail(name, "a jax tracer (%s): inside jax.jit, vmap or grad an array has no data yet; use "
                        "gatednorm.jax_ops (the same functions as XLA custom calls), or call gatednorm from "
                        "jax.pure_callback (slower; docs/frameworks.md)" % tp.__name__)
        _fail(name, "%s has __dlpack__ but no __dlpack_device__ (DLPack asks for both), and no array interface"
              % tp.__name__)
    return _ADAPTERS[k](x, name, writable, sc, i, s, hold)


def refuse_masked(name):
    """The refusal of a numpy masked array as argument ``name`` (its mask would be ignored)."""
    _fail(name, "numpy masked arrays are not supported (the mask would be ignored); pass %s.data or %s.filled(value)"
          % (name, name))


def _from_masked(x, name, writable, sc, i, s, hold):
    refuse_masked(name)


_ADAPTERS = {NUMPY: _from_numpy, OWN: _from_own, TORCH: _from_torch, DLPACK: _from_dlpack,
             DLPACK_CAI: _from_dlpack, CAI: _from_cai, ARRAY_IFACE: _from_array_iface, PROBE: _from_probe,
             MASKED: _from_masked}
_type_adapter: dict = {}  # type -> adapter function: one dict lookup per argument
_SLOTTED = frozenset((_from_torch, _from_cai, _from_probe))  # adapters that pack into a scratch slot


def _not_an_array(x, name, writable, sc, i, s, hold):
    if (isinstance(x, int) or hasattr(x, "__int__")) and not isinstance(x, (bool, float, np.bool_, np.floating)):
        _fail(name, "got a bare pointer (%s); wrap it with gatednorm.from_pointer(ptr, shape, dtype)"
              % type(x).__name__)
    _fail(name, "expected an array (numpy, DLPack, __cuda_array_interface__, gatednorm.DeviceArray), "
                "got %s" % type(x).__name__)


def _adapter_for(x):
    tp = type(x)
    f = _type_adapter.get(tp)
    if f is None:
        k = kind_of(x)
        if k == PROBE and not (hasattr(x, "__dlpack__") or hasattr(x, "__cuda_array_interface__")
                               or hasattr(x, "__array_interface__")):
            return _not_an_array
        f = _ADAPTERS[k]
        if k != PROBE:
            _type_adapter[tp] = f
    return f


def release(hold) -> None:
    """Release every consumed DLPack tensor in ``hold`` (call once the library returned)."""
    if _dlpack is None:  # no DLPack argument yet in this process: nothing consumed
        return
    imported = _dlpack.Imported
    for h in hold:
        if type(h) is imported:
            h.release()


def convert(x, name: str, s: int, hold: list, writable: bool):
    """A new gatednorm_tensor * for array ``x`` (argument ``name``) launching on stream ``s``
    (the adapters outside an Entry call; the pointer stays valid while it is referenced)."""
    _ensure_layout()
    sc = _Scratch()
    t = _adapter_for(x)(x, name, writable, sc, 0, s, hold)
    if writable and isinstance(x, DeviceArray):  # the caller writes it next (Entry.call: after success)
        x._sync.stream = s
    if t is sc.ptrs[0]:
        t = ffi.new("gatednorm_tensor *", t[0])
    return t


# ------------------------------------------------------------------------------- streams
def resolve_stream(stream, x, kind=None, name="x"):
    """(launch stream handle, CAI dict of x if read) for a call whose first array is x:
    the explicit ``stream``; else torch's current stream for a torch tensor; else the
    ``stream`` of x's __cuda_array_interface__; else 0 (the default stream)."""
    if stream is not None:
        return _runtime.stream_handle(stream), None
    if kind is None:
        kind = kind_of(x)
    if kind == TORCH:
        return torch_stream(x), None
    if kind == CAI or kind == DLPACK_CAI:
        try:
            cai = x.__cuda_array_interface__
            cai.get  # noqa: B018 (not a dict: x's adapter names the malformed interface, not here)
        except Exception:
            return 0, None
        cs = cai_stream(cai, name)
        return (cs or 0), (cai if kind == CAI else None)
    return 0, None


_stream_ptrs: dict = {0: ffi.NULL}


def _stream_ptr(s):
    p = _stream_ptrs.get(s)
    if p is None:
        if len(_stream_ptrs) > 256:
            _stream_ptrs.clear()
            _stream_ptrs[0] = ffi.NULL
        p = _stream_ptrs[s] = ffi.cast("void *", s)
    return p


# --------------------------------------------------------------------------------- entry
_COMPILE_LOCK = threading.Lock()  # Entry._compile_and_call: one compile an entry


def _new_compile_lock_in_child():
    global _COMPILE_LOCK  # as _ffi._lock: a child forked mid-compile must not wait on it
    _COMPILE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_compile_lock_in_child)


def _renamer(c_names: dict, params_keywords: bool):
    """A message's C argument names (whole words, not field paths like params.y) replaced by
    the wrapper's; with ``params_keywords``, a params field path by the wrapper's keyword for
    it (``params.eps`` -> ``eps``, ``params.quant.format`` -> ``fp8_format``): the norm ops'
    options are keywords named as their fields."""
    import re

    subs = []
    if params_keywords:
        fields = re.compile(r"(?<![\w.\[])params\.(?:quant\.)?(\w+)")
        subs.append(lambda msg: fields.sub(lambda m: _PARAM_KEYWORDS.get(m.group(1), m.group(1)), msg))
    if c_names:
        pattern = re.compile(r"(?<![\w.\[])(%s)(?![\w\[])" % "|".join(map(re.escape, c_names)))
        subs.append(lambda msg: pattern.sub(lambda m: c_names[m.group(1)], msg))

    def rename(msg):
        for sub in subs:
            msg = sub(msg)
        return msg

    return rename if subs else None


_PARAM_KEYWORDS = {"format": "fp8_format"}  # params fields whose wrapper keyword has another name


class Entry:
    """One C entry point ``function(desc..., params, stream)``: ``names`` are its descriptor
    arguments in order, as the wrapper's keywords name them (and errors do), ``outputs`` the
    ones it writes, ``params_type`` its options struct (None: the entry takes no params);
    ``c_names`` maps a C argument name to the wrapper's where they differ, so the library's
    messages name what the caller passed ({"y_copy": "y"}); ``params_keywords``: the wrapper's
    keywords are the params fields (the norm ops), so messages name ``eps``, not
    ``params.eps``; ``label``: the op name errors start with (default: the C name without
    ``gatednorm_``; rmsnorm calls add_rmsnorm's entry under its own)."""

    def __init__(self, function: str, params_type: str | None, names: tuple, outputs: tuple = (), compile_now: bool = False,
                 c_names: dict | None = None, params_keywords: bool = False, label: str | None = None,
                 packed: bool = False):
        self.function = function
        # packed: the library has ``<function>_packed(const <function>_args *)``, the same call
        # with its arguments in one struct: the all-numpy out= path passes one pointer, made
        # once the same addresses and params recur (_packed_seen; cffi's ABI mode costs ~40 ns
        # an argument passed).
        self.packed = packed
        if packed and type(self)._bind is not Entry._bind:  # the packed call passes the raw symbol
            raise TypeError("%s: a packed entry cannot bind arguments (_bind)" % function)
        self._packed_cache: dict = {}
        self._packed_seen: dict = {}  # hash of an argument key -> times seen (_packed_seen)
        self.c_names = dict(c_names or {})
        self._params_keywords = params_keywords
        self._variants: dict = {}
        self._rename = _renamer(self.c_names, params_keywords)
        self.short = label or (function[len("gatednorm_"):] if function.startswith("gatednorm_") else function)
        self.params_type = params_type
        self.names = tuple(names)
        self.writable = tuple(n in outputs for n in self.names)
        self._out_index = tuple(j for j, n in enumerate(self.names) if n in outputs)
        self._fn = None
        self._defaults = None
        self._env = None  # the compiled call's globals (``_compile``)
        self._cache: dict = {}
        # Compiled at the first call, so `import gatednorm` pays only for the entries a wrapper
        # binds at import (compile_now: ops.py keeps `call` in a global, saving the attribute
        # lookup on the host path #11 measures).
        self.call = self._compile() if compile_now else self._compile_and_call

    def with_outputs(self, outputs: tuple) -> "Entry":
        """This entry with ``outputs`` as the arguments it writes (made once, then cached):
        add_rmsnorm writes its residual only in place, so with residual_out given the
        residual is read only, and may be read-only (a JAX array, a read-only numpy view)."""
        e = self._variants.get(outputs)
        if e is None:
            e = self._variants[outputs] = self._variant(outputs)
        return e

    def _variant(self, outputs):
        return Entry(self.function, self.params_type, self.names, outputs, c_names=self.c_names,
                     params_keywords=self._params_keywords, label=self.short, packed=self.packed)

    def _raise_error(self, status, function, message=None):
        _ffi.raise_error(status, function, self._rename, message)

    def _compile_and_call(self, *args, **kw):
        """``call`` until the first call: compiles it (``_compile``, a few ms an entry that
        an import would pay for every op), puts it in its place and makes the call.  Once:
        threads making their first calls at once wait for the first one's compile (two
        compiles left ``_env``, where ``_ready`` binds the C function, belonging to the call
        not installed, which then went through ``_first_call`` on every call)."""
        with _COMPILE_LOCK:
            if self._env is None:
                self.call = self._compile()
        return self.call(*args, **kw)

    def _load(self):
        """The C function this entry calls (``_bind`` may bind arguments to it) and the
        library's default params.  ``_fn`` is published last: a thread that sees it set finds
        the defaults set too (the ``_init`` call releases the GIL; ``params`` once copied
        the defaults of a half-loaded entry: an all-zero struct, cached for good)."""
        lib = _ffi.lib()
        if self.params_type is not None and self._defaults is None:
            d = ffi.new(self.params_type + " *")
            _ffi.check(getattr(lib, self.params_type + "_init")(d, ffi.sizeof(d[0])), self.params_type + "_init")
            self._defaults = d[0]
        fn = self._bind(getattr(lib, self.function))
        self._fn = fn
        return fn

    def _bind(self, raw):
        """The function ``call`` makes from the library's ``raw`` one (a subclass binds
        arguments here)."""
        return raw

    def _ready(self):
        """The function to call, bound as the compiled call's ``FN`` (until then ``FN`` is
        ``_first_call``)."""
        fn = self._fn or self._load()
        if self.packed:
            self._env["PFN"] = getattr(_ffi.lib(), self.function + "_packed")
        self._env["FN"] = fn
        return fn

    def _first_call(self, *args):
        """``FN`` before the entry is loaded: loads it and makes the call."""
        return self._ready()(*args)

    def _first_packed(self, args):
        """``PFN`` (a packed entry's ``<function>_packed``) before the entry is loaded."""
        self._ready()
        return self._env["PFN"](args)

    def params(self, **fields):
        """A params struct: the library's defaults with ``fields`` set (values already
        checked by the wrapper), cached per field values (a wrapper's options repeat)."""
        key = tuple(fields.items())
        if any(type(v) is float and v == 0.0 for v in fields.values()):
            key += tuple(math.copysign(1.0, v) for v in fields.values() if type(v) is float and v == 0.0)
        p = self._cache.get(key)
        if p is None:
            if self._fn is None:
                self._load()
            p = ffi.new(self.params_type + " *", self._defaults)
            for k, v in fields.items():
                try:
                    if "__" in k:  # a field of an embedded struct: quant__format -> p.quant.format
                        head, _, tail = k.partition("__")
                        setattr(getattr(p, head), tail, v)
                    else:
                        setattr(p, k, v)
                except (TypeError, OverflowError) as e:  # named as the caller spelled it: quant__group_size -> group_size
                    name = k.rpartition("__")[2]
                    if isinstance(e, OverflowError):
                        raise argument_error("%s: %r is out of range" % (name, v)) from None
                    raise argument_error("%s: %s (got %r)" % (name, e, v)) from None
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = p
        return p

    def __call__(self, stream, *arrays, params=None):
        """Runs the entry on ``arrays`` (C order; None passes NULL; a ``New`` output is
        allocated like an earlier argument, once that one has been read) and returns the
        arrays of its ``outputs`` (given or new), in order.  Wrappers call ``self.call``, the
        same function compiled for this entry's argument list, whose ``params`` is a params
        struct or NULL (the library's defaults), never None."""
        return self.call(stream, *arrays, params=_NULL if params is None else params)

    def _compile(self):
        """``self.call``: __call__ unrolled for this entry's arguments (host time per call is
        what eager users pay on every layer: no loop, no per-argument tuple indexing).  Each
        argument: a numpy ndarray -> its buffer (this call's address, kept until the library
        returned) and the descriptor made for that address, shape and dtype (``_np_descs``);
        None -> NULL; a DeviceArray -> its cached descriptor, after waiting for a pending
        write on another stream; anything else -> its producer's adapter.  All-numpy calls
        on the default stream take a fast path (``call_new`` when outputs are to be made)."""
        n = len(self.names)
        args = ", ".join("a%d" % i for i in range(n))
        inputs = [i for i, w in enumerate(self.writable) if not w]
        outputs = [i for i, w in enumerate(self.writable) if w]
        fn_args = ", ".join("t%d" % i for i in range(n))
        if self.params_type is not None:
            fn_args += ", params"
        ret = "return [%s]" % ", ".join("a%d" % j for j in self._out_index)
        lines = ["def call(stream, %s, params=NULL):" % args]
        # Every argument a numpy ndarray on the default stream (the host call of a CPU
        # user): no stream, scratch or hold.  Each buffer (this call's address; refused when
        # not C-contiguous or, for an output, read-only) is kept until the library returned.
        # Any buffer refused: the general path below, which reads the arguments again in
        # order and names the one at fault.  An unpacked entry takes None (NULL) here too:
        # add_rmsnorm's and the FP8 ops' optional outputs are mostly None, and those calls
        # took the general path (~1.4 us more, session 46); None reaches C as the general
        # path passes it.
        nd = (lambda i: "type(a%d) is NDARRAY" % i) if self.packed else \
            (lambda i: "(type(a%d) is NDARRAY or a%d is None)" % (i, i))
        lines += ["    if %s:" % " and ".join(["stream is None"] + [nd(i) for i in inputs])]
        ind = "        "
        if outputs:  # outputs tested apart: the `New` branch below costs an out= call nothing
            lines += ["        if %s:" % " and ".join(nd(i) for i in outputs)]
            ind = "            "
        lines += [ind + "try:"]
        for i, w in enumerate(self.writable):
            fb = "FBW(CA, a%d, True)" % i if w else "FB(a%d)" % i
            lines += [ind + "    b%d = %s" % (i, fb if self.packed else "None if a%d is None else %s" % (i, fb))]
        lines += [ind + "except FB_ERRORS:",
                  ind + "    pass",
                  ind + "else:"]
        if self.packed:
            # One lookup for all arrays (and params): the struct of the call's arguments, made
            # for these addresses, shapes and dtypes (_packed_args); `keep` holds its
            # descriptors until the library returned (a cache cleared meanwhile drops them).
            # A miss makes the six-argument call and counts the arguments (_packed_seen: a
            # struct is made once they recur, while the cache has room).
            bs = ", ".join("b%d" % i for i in range(n))
            lines += [ind + "    key = (%s, params)" % bs,
                      ind + "    try:",
                      ind + "        %s, pk, keep = PACKED[key]" % (
                          ", ".join(["s%d" % i for i in range(n)] + ["d%d" % i for i in range(n)])),
                      ind + "    except KeyError:",
                      ind + "        s0 = None",
                      ind + "    if %s:" % " or ".join(["s%d != a%d.shape" % (i, i) for i in range(n)]
                                                      + ["d%d is not a%d.dtype" % (i, i) for i in range(n)])]
            for i in range(n):
                lines += self._np_desc_lines(ind + "        ", i)
            lines += [ind + "        st = FN(%s, NULL)" % fn_args,
                      ind + "        if not st:",
                      ind + "            packed_seen(E, key, (%s,), (%s,), params)" % (args, bs),
                      ind + "    else:",
                      ind + "        st = PFN(pk)"]
        else:
            for i in range(n):
                lines += [ind + "    if b%d is None:" % i,
                          ind + "        t%d = NULL" % i,
                          ind + "    else:"]
                lines += self._np_desc_lines(ind + "        ", i)
            lines += [ind + "    st = FN(%s, NULL)" % fn_args]
        lines += [ind + "    if st:",
                  ind + "        raise_error(st, SHORT)",
                  ind + "    " + ret]
        if outputs:
            # Outputs to allocate (New) among numpy outputs: call_new (None: the general path).
            lines += ["        elif %s:" % " and ".join("(type(a%d) is NDARRAY or type(a%d) is New)" % (i, i)
                                                         for i in outputs),
                      "            made = call_new(%s, params)" % args,
                      "            if made is not None:",
                      "                return made"]
        lines += ["    fn = E._fn or E._ready()"]  # before any descriptor: the header parsed
        lines += ["    tp = type(a0)",
                 "    cai0 = None",  # a CAI a0's dict, read once for its stream and once for its descriptor
                 "    if stream is None:",
                 "        if tp is NDARRAY or tp is DA:",
                 "            s = 0",
                 "        else:",
                 "            k = KINDS.get(tp)",
                 "            s, cai0 = (0, None) if k == NUMPY or k == OWN else resolve_stream(None, a0, None, %r)" % self.names[0],
                 "    else:",
                 "        s = stream_handle(stream)",
                 "    sc = None",
                 "    hold = []",
                 "    try:"]
        lines += ["        w%d = None" % i for i, w in enumerate(self.writable) if w]
        lines += ["        g%d = a%d" % (i, i) for i, w in enumerate(self.writable) if w]
        for i, (name, w) in enumerate(zip(self.names, self.writable)):
            prev_a = "(%s,)" % ", ".join("a%d" % j for j in range(i)) if i else "()"
            prev_t = "(%s,)" % ", ".join("t%d" % j for j in range(i)) if i else "()"
            if i:
                lines += ["        tp = type(a%d)" % i]
            lines += [
                # numpy, inline: from_buffer refuses what is not C-contiguous (and, for an
                # output, read-only); those go to the adapter, which names the argument.
                "        if tp is NDARRAY:",
                "            try:",
                "                b%d = FB(CA, a%d, %r)" % (i, i, w),
                "                d = NPD.get(b%d)" % i,
                "            except FB_ERRORS:",
                "                b%d = d = None" % i,
                "            if d is not None and d[0] == a%d.shape and d[1] is a%d.dtype:" % (i, i),
                "                t%d = d[2]" % i,
                "            elif b%d is None:" % i,
                "                t%d = from_numpy(a%d, %r, %r, sc, %d, s, hold)" % (i, i, name, w, i),
                "            else:",
                "                t%d = np_desc(a%d, %r, b%d)" % (i, i, name, i),
                "        elif a%d is None:" % i,
                "            t%d = NULL" % i,
                "        elif tp is DA:",
                "            t%d = a%d._t or own_tensor(a%d, %r)" % (i, i, i, name),
                "            sy = a%d._sync" % i,
                "            if sy.stream is not None and sy.stream != s:",
                "                wait_pending(a%d, sy)" % i]
            if w:
                lines += ["            if sy.readonly:",
                          "                read_only(%r)" % name,
                          "            w%d = sy" % i]
            lines += [
                "        else:",
                "            if tp is New:",
                "                a%d = a%d.make(%s[a%d.like], %s[a%d.like], E.names[a%d.like], %r)" % (i, i, prev_a, i, prev_t, i, i, name),
                "                tp = type(a%d)" % i,
                "            f = ADAPTER(tp) or adapter_for(a%d)" % i,
                "            if sc is None and f in SLOTTED:",
                "                sc = scratch_busy()"]
            if i == 0:
                lines += ["            if cai0 is not None:",
                          "                t0 = from_cai(a0, %r, %r, sc, 0, s, hold, cai0)" % (name, w),
                          "            else:",
                          "                t0 = f(a0, %r, %r, sc, 0, s, hold)" % (name, w)]
            else:
                lines += ["            t%d = f(a%d, %r, %r, sc, %d, s, hold)" % (i, i, name, w, i)]
            if w:  # a DeviceArray subclass: its pending write recorded after success, as DA's
                lines += ["            if f is FROM_OWN:",
                          "                w%d = a%d._sync" % (i, i)]
        targs = ", ".join("t%d" % i for i in range(n))
        if self.params_type is not None:
            targs += ", NULL if params is None else params"
        # STREAMS.get(0) is NULL, which is false: test for None, not truth.
        lines += ["        sp = STREAMS.get(s)",
                  "        if sp is None:",
                  "            sp = stream_ptr(s)",
                  "        st = fn(%s, sp)" % targs,
                  # the message read before `release`: a producer's deleter (or what it
                  # frees) may call the library, whose own failure would replace it (review)
                  "        msg = last_error() if st else None",
                  "    finally:",
                  "        if sc is not None:",
                  "            sc.busy = False",
                  "        if hold:",
                  "            release(hold)",
                  "    if st:",
                  "        raise_error(st, SHORT, msg)"]
        # A DeviceArray output records its pending write once the launch succeeded; a torch
        # output's version counter is bumped then (_torch_written).
        lines += ["    if w%d is not None:\n        w%d.stream = s" % (i, i) for i, w in enumerate(self.writable) if w]
        outs = [i for i, w in enumerate(self.writable) if w]
        if outs:  # g: as given (a New's output is fresh: nothing to bump)
            lines += ["    bt = None"]
            for i in outs:
                lines += ["    if g%d is a%d and KINDS.get(type(a%d)) == TORCH:" % (i, i, i),
                          "        bt = [a%d] if bt is None else bt + [a%d]" % (i, i)]
            lines += ["    if bt is not None:", "        torch_written(bt)"]
        lines += [

                  "    return [%s]" % ", ".join("a%d" % j for j in self._out_index)]
        env = dict(E=self, KINDS=_kind_cache, NUMPY=NUMPY, OWN=OWN, TORCH=TORCH, torch_written=_torch_written,
                   FROM_OWN=_from_own,
                   resolve_stream=resolve_stream,
                   stream_handle=_runtime.stream_handle, NULL=_NULL, DA=DeviceArray, own_tensor=own_tensor,
                   wait_pending=_wait_pending, New=New, ADAPTER=_type_adapter.get, adapter_for=_adapter_for,
                   SLOTTED=_SLOTTED, scratch_busy=_scratch_busy, STREAMS=_stream_ptrs, stream_ptr=_stream_ptr,
                   release=release, raise_error=self._raise_error, SHORT=self.short, last_error=_ffi.last_error_message,
                   NDARRAY=np.ndarray, FB=_from_buffer, FBW=_from_writable, FN=self._first_call, CA=_CHAR_ARRAY,
                   NPD=_np_descs, FB_ERRORS=_FB_ERRORS, PACKED=self._packed_cache, packed_seen=_packed_seen,
                   PFN=self._first_packed,
                   from_numpy=_from_numpy, np_desc=_np_desc, from_cai=_from_cai, read_only=_read_only_output)
        exec(compile("\n".join(lines), "<gatednorm entry %s>" % self.function, "exec"), env)
        if outputs:
            exec(compile("\n".join(self._call_new_lines(fn_args, ret)), "<gatednorm entry %s>" % self.function,
                         "exec"), env)
        self._env = env  # last: _compile_and_call takes a set _env for a finished compile
        return env["call"]

    def _np_desc_lines(self, ind, i):
        """Code setting ``t<i>``: the descriptor of numpy argument ``a<i>`` whose buffer is
        ``b<i>`` (entered in ``_np_descs`` if it has none for this address, shape and dtype)."""
        return [ind + "try:",
                ind + "    sh, dt, t%d = NPD[b%d]" % (i, i),
                ind + "except KeyError:",
                ind + "    sh = dt = None",
                ind + "if sh != a%d.shape or dt is not a%d.dtype:" % (i, i),
                ind + "    t%d = np_desc(a%d, %r, b%d)" % (i, i, self.names[i], i)]

    def _call_new_lines(self, fn_args, ret):
        """``call_new``: the numpy fast path for a call whose inputs are numpy ndarrays and
        whose outputs are numpy ndarrays or ``New`` (made as the general path makes them: numpy
        arrays like their argument).  Arguments are read and made in order, as the general
        path does, so the same error comes first; a buffer refused returns None (the caller
        takes the general path, which makes its own outputs)."""
        n = len(self.names)
        lines = ["def call_new(%s, params):" % ", ".join("a%d" % i for i in range(n))]
        for i, w in enumerate(self.writable):
            if w:
                prev_a = "(%s,)" % ", ".join("a%d" % j for j in range(i)) if i else "()"
                prev_t = "(%s,)" % ", ".join("t%d" % j for j in range(i)) if i else "()"
                lines += ["    if type(a%d) is New:" % i,
                          "        a%d = a%d.make(%s[a%d.like], %s[a%d.like], E.names[a%d.like], %r)"
                          % (i, i, prev_a, i, prev_t, i, i, self.names[i])]
            lines += ["    try:",
                      "        b%d = %s" % (i, "FBW(CA, a%d, True)" % i if w else "FB(a%d)" % i),
                      "    except FB_ERRORS:",
                      "        return None"]
            lines += self._np_desc_lines("    ", i)
        lines += ["    st = FN(%s, NULL)" % fn_args,
                  "    if st:",
                  "        raise_error(st, SHORT)",
                  "    " + ret]
        return lines


def _scratch_busy() -> _Scratch:
    """This thread's descriptor slots, marked in use (fresh ones if a producer's export
    re-entered the library while they were)."""
    sc = getattr(_tls, "sc", None) or _scratch()
    if sc.busy:
        sc = _Scratch()
    sc.busy = True
    return sc


class New:
    """An output for ``Entry.__call__`` to allocate: of the kind and device of argument
    ``like`` (an index), with ``shape`` (None: like's) and ``dtype`` (a numpy dtype; None:
    like's), made after ``like`` has been read, from what was read."""

    __slots__ = ("shape", "dtype", "like")

    def __init__(self, dtype=None, shape=None, like=0):
        self.dtype, self.shape, self.like = dtype, shape, like

    def make(self, src, desc, src_name="x", out_name="out"):
        if src is None:  # nothing to allocate like: the argument is missing
            raise argument_error("%s: required (an array); got None" % src_name)
        k = kind_of(src)
        shape = self.shape
        dt = self.dtype
        if k == NUMPY:
            return _allocate(True, src.shape if shape is None else shape, src.dtype if dt is None else dt, None, None,
                             out_name, src_name)
        if k == TORCH:
            shape = tuple(src.shape) if shape is None else shape
            try:
                tdt = src.dtype if dt is None else _dtypes.to_torch_dtype(sys.modules["torch"], dt)
                return src.new_empty(shape, dtype=tdt)
            except RuntimeError as e:
                raise torch_allocation_error(e, out_name, src_name, shape, src.dtype if dt is None else dt) from None
        if shape is None:
            shape = tuple(desc.shape[0:desc.ndim])
        if dt is None:
            dt = _dtypes.np_of_dl((desc.dtype.code, desc.dtype.bits), _dtypes.float32)
        try:
            return _allocate(False, shape, dt, desc.device.device_type, desc.device.device_id, out_name, src_name)
        except GatedNormError as e:
            if e.status == OUT_OF_MEMORY:
                raise
            # else x's metadata (shape, device) is what made it fail: name x
            raise argument_error("%s: no output can be made like it: %s" % (src_name, e.message)) from None


def _allocate(host_numpy, shape, dt, devtype, devid, out_name, like_name):
    """np.empty (``host_numpy``) or a DeviceArray on (devtype, devid); an allocation that
    fails for want of memory raises ``unallocated``, naming the output."""
    try:
        if host_numpy:
            return np.empty(shape, dt)
        return _new_array(shape, dt, devtype, devid)
    except MemoryError as e:  # numpy's, or _new_array's: past what any device holds
        raise unallocated(out_name, like_name, shape, dt, e) from None
    except GatedNormError as e:  # before ValueError: an InvalidArgumentError is one
        if e.status != OUT_OF_MEMORY:
            raise
        raise unallocated(out_name, like_name, shape, dt, e) from None
    except ValueError as e:  # numpy: past its largest array
        if not host_numpy:
            raise
        raise unallocated(out_name, like_name, shape, dt, e) from None


def unallocated(out_name, like_name, shape, dt, e, what=None) -> GatedNormError:
    """The error for an output the call layer could not allocate (numpy's MemoryError, a
    torch OOM, the library's own): it names the output (``what``: the thing made, where it is
    not the output itself), its size and what it was made like.  Raised before the library's
    checks of the other arguments: an output too large to make is refused whatever they
    hold, and nothing has been written."""
    try:
        dt = np.dtype(dt)
    except TypeError:  # a torch dtype: named and sized as torch says
        pass
    try:
        size = math.prod(int(d) for d in shape)
        size_text = "shape %s, %s, %s bytes" % (tuple(int(d) for d in shape), _dtype_label(dt), size * int(dt.itemsize))
    except Exception:  # a dtype without itemsize (an old torch): say what is known
        size_text = "shape %s, %s" % (tuple(shape), _dtype_label(dt))
    # the library's refusal, without the subjects DeviceArray and the allocator put before it
    reason = e.message.rpartition("cannot be allocated: ")[2] if isinstance(e, GatedNormError) \
        else "%s: %s" % (type(e).__name__, str(e).split("\n")[0])
    return GatedNormError(OUT_OF_MEMORY, "%s: %scannot be allocated (%s, made like %s): %s"
                          % (out_name, what + " " if what else "", size_text, like_name, reason))


# What torch's allocators say when memory runs out: the CUDA caching allocator (its
# OutOfMemoryError), the CPU allocator ("DefaultCPUAllocator: can't allocate memory").
_TORCH_OOM_TEXTS = ("out of memory", "can't allocate memory", "not enough memory")


def torch_allocation_error(e, out_name, like_name, shape, dt, what=None) -> GatedNormError:
    """The error for torch's RuntimeError while making an output like ``like_name``: out of
    memory (``unallocated``) when it says so, else an error naming the tensor it was made like
    (a sticky CUDA error, a subclass refusing new_empty: not a lack of memory)."""
    text = str(e)
    if type(e).__name__ == "OutOfMemoryError" or any(t in text for t in _TORCH_OOM_TEXTS):
        return unallocated(out_name, like_name, shape, dt, e, what)
    # a device's error (a sticky one from an earlier kernel) keeps that status
    status = DEVICE_ERROR if ("CUDA error" in text or "HIP error" in text) else INVALID_ARGUMENT
    return argument_error("%s: no %s can be made like it: %s: %s"
                          % (like_name, what or out_name, type(e).__name__, text.split("\n")[0]), status)


def _dtype_label(dt) -> str:
    """numpy's name for a numpy dtype (float32, bfloat16), torch's (torch.bfloat16) for torch's."""
    return getattr(dt, "name", None) or str(dt)


def _new_array(shape, dt, devtype, devid):
    """A DeviceArray output; MemoryError where its bytes pass what any device can hold (the
    caller names the output; DeviceArray itself would name its own ``shape`` argument)."""
    nbytes = math.prod(shape) * dt.itemsize  # dt: a numpy dtype (both callers); a negative extent: DeviceArray's
    if nbytes >= 1 << 63:
        raise MemoryError("%d bytes, past what any device can hold" % nbytes)
    if devtype in _runtime.HOST_TYPES:
        devtype, devid = _runtime.CPU, 0
    else:  # e.g. CUDA-managed memory: plain memory of the GPU backend
        devtype = _runtime.gpu_device_type() or devtype
    return DeviceArray(shape, dt, (devtype, devid))


# ------------------------------------------------------------------------- option memos
# Option types with no signed zero (strings, None, bools, ints): their values alone key them.
_UNSIGNED_OPTION_TYPES = frozenset((str, type(None), bool, int))


def options_key(opts: tuple):
    """A dict key for a wrapper's raw option values, equal only for options of the same
    values and types (True, 1 and 1.0 apart) and, for every real option, the same sign of
    zero: -0.0 equals and hashes as 0.0, yet a -0.0 weight offset is not 0.0 (w + -0.0
    keeps a -0.0 weight's sign) and a -0.0 fp8_max is refused where 0.0 means the format's
    largest value (a per-call list of such options missed fp8_max: review, session 50).
    The types in the key fix which positions carry a sign.  An unhashable option makes the
    lookup raise TypeError: the wrapper then checks its options the slow way, which names
    the bad one."""
    return opts + tuple(map(type, opts)) + tuple(math.copysign(1.0, v) if type(v) is float else _zero_sign(v)
                                                 for v in opts if type(v) not in _UNSIGNED_OPTION_TYPES)


def _zero_sign(v):
    """A signed zero's sign for any real number type (numpy floats, Decimal: their -0 equals and
    hashes as 0, a review found numpy's -0.0 offset memoized as +0.0), else v itself."""
    try:
        return math.copysign(1.0, v)
    except (TypeError, OverflowError):  # OverflowError: an int past float's range, checked later by real()
        return v


def memo_get(memo: dict, key):
    """memo[key], or None when absent or the key is unhashable (the caller checks the options)."""
    try:
        return memo.get(key)
    except TypeError:
        return None


def memo_put(memo: dict, key, value):
    """Remembers the checked options' value (bounded: a program's options repeat)."""
    try:
        if len(memo) > 64:
            memo.clear()
        memo[key] = value
    except TypeError:
        pass
    return value


# ------------------------------------------------------------------------- option checks
def flag(name, v) -> int:
    """1 / 0 for a bool (Python or numpy); anything else (ints included) is refused."""
    if v is True:
        return 1
    if v is False:
        return 0
    if isinstance(v, np.bool_):
        return int(v)
    raise argument_error("%s: expected True or False, got %r" % (name, v))


_FP32_MAX = float(np.finfo(np.float32).max)


def real(name, v) -> float:
    """A float from an int or float (numpy scalars too); bools, strings, None refused, and a
    finite value past fp32's range (the C fields are floats: it would arrive as inf, and the
    library's message would show inf, not the value given)."""
    if type(v) is not float:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise argument_error("%s: expected a real number, got %r" % (name, v))
        try:
            v = float(v)
        except OverflowError:
            raise argument_error("%s: %r is out of range" % (name, v)) from None
    if abs(v) > _FP32_MAX and v - v == 0.0:  # finite (inf - inf and NaN are NaN)
        raise argument_error("%s: %r is beyond fp32's range (the library's options are fp32)" % (name, v))
    return v


def eps(v) -> float:
    """eps as real() takes it, and refused here if negative yet -0.0 in fp32 (C's check, which
    refuses every other negative value naming the op, reads the fp32 field: -0.0 is a valid
    eps there, but the caller gave a negative one)."""
    v = real("eps", v)
    if v < 0.0 and np.float32(v) == 0.0:
        raise argument_error("eps: expected a finite value >= 0, got %r" % v)
    return v


def view_size(name, v) -> int:
    """A size >= 1 viewing the last dim as [L / size, size], where None (the default) means
    the last dim: the C entries' 0 for none is not taken from Python, where it read as a size
    and silently meant none."""
    g = integer(name, v)
    if g < 1:
        raise argument_error("%s: expected None (the last dim) or a size >= 1, got %d" % (name, g))
    return g


def choice(name, v, table: dict) -> int:
    """table[v] for one of its (string) keys."""
    try:
        return table[v]
    except (KeyError, TypeError):
        raise argument_error("%s: expected one of %s, got %r" % (name, ", ".join(repr(k) for k in table), v)) from None


# ------------------------------------------------------------------------ new outputs
dtype_arg = _dtypes.dtype_arg


def _describe(x, name="x"):
    """(shape, numpy dtype or None, device type, device id) of any array, read through its
    adapter (for producers without numpy-like attributes); errors name ``name``."""
    hold = []
    try:
        t = convert(x, name, 0, hold, False)
        nd = t.ndim
        return (tuple(t.shape[0:nd]), _dtypes.np_of_dl((t.dtype.code, t.dtype.bits)),
                t.device.device_type, t.device.device_id)
    finally:
        release(hold)


class _Described:
    """What a wrapper needs of an array to allocate outputs like it (its shape, dtype and
    device), read once: ``described`` gives it for producers read through an adapter, so a
    wrapper that allocates several outputs reads such an array once before its Entry call
    (which reads it once more), not once an output."""

    __slots__ = ("shape", "dtype", "devtype", "devid")

    def __init__(self, shape, dtype, devtype, devid):
        self.shape, self.dtype, self.devtype, self.devid = shape, dtype, devtype, devid


def described(x, name="x"):
    """x itself where its fields read directly (numpy, torch, DeviceArray), else its
    _Described: pass it to shape_of / dtype_of / device_of / empty_like in place of x."""
    k = kind_of(x)
    if k == NUMPY or k == OWN or k == TORCH:
        return x
    return _Described(*_describe(x, name))


def shape_of(x, name="x") -> tuple:
    """x's shape (read through its adapter for producers without a ``shape``)."""
    if type(x) is _Described:
        return x.shape
    k = kind_of(x)
    if k == NUMPY or k == OWN:
        return tuple(x.shape)
    if k == TORCH:
        try:
            return tuple(x.shape)
        except RuntimeError:  # a nested tensor has no sizes
            _not_strided(x, name)
    return _describe(x, name)[0]


_TORCH_STRIDED = []


def _torch_strided():
    """torch.strided, looked up once."""
    if not _TORCH_STRIDED:
        _TORCH_STRIDED.append(getattr(sys.modules["torch"], "strided", None))
    return _TORCH_STRIDED[0]


def _not_strided(x, name):
    """Refuses torch tensor x, which has no strided storage (nested, sparse, mkldnn), by name."""
    _fail(name, "%s, not a strided array" % _torch_layout_text(x))


def _torch_layout_text(x) -> str:
    """What torch tensor x is, for a refusal of its storage: nested (whose layout reads
    strided), else its layout."""
    if getattr(x, "is_nested", False):
        return "a nested torch tensor"
    return "a torch tensor of layout %s" % getattr(x, "layout", "?")


def device_of(x, name="x") -> tuple:
    """(DLPack device type, id) of any array (host memory of any kind reads as (CPU, 0))."""
    if type(x) is _Described:
        return (_runtime.CPU, 0) if x.devtype in _runtime.HOST_TYPES else (x.devtype, x.devid)
    k = kind_of(x)
    if k == NUMPY:
        return (_runtime.CPU, 0)
    if k == OWN:
        t, i = x._devtype, x._devid
    elif k == TORCH and x.is_cuda:
        t, i = (_torch_state or _torch())[1], x.get_device()
    elif k == TORCH and x.is_cpu:
        t, i = _runtime.CPU, 0
    else:
        t, i = _describe(x, name)[2:]
    return (_runtime.CPU, 0) if t in _runtime.HOST_TYPES else (t, i)


def dtype_of(x, name="x") -> np.dtype | None:
    """x's element type as a numpy dtype (None where numpy has none); errors name ``name``."""
    if type(x) is _Described:
        return x.dtype
    k = kind_of(x)
    if k == NUMPY or k == OWN:
        return x.dtype
    if k == TORCH:
        dl = (_torch_state or _torch())[0].get(x.dtype)
        return _dtypes.np_of_dl(dl) if dl else None
    return _describe(x, name)[1]


# empty_like's torch path, cached: dtype argument (a numpy / ml_dtypes dtype, a name, a torch
# dtype) -> torch dtype, and x's torch dtype -> the dtype of an output "of x's dtype" (x's own,
# or float32 where numpy has no such dtype, as below).  A fresh output then costs a dict
# lookup and new_empty, not the dtype's conversions (~2.5 us an output: the no-out= calls'
# extra cost).
_torch_dtype_of = {}
_torch_like_dtype = {}


def _torch_empty(x, shape, dtype, dtype_name):
    cache, key = (_torch_like_dtype, x.dtype) if dtype is None else (_torch_dtype_of, dtype)
    try:
        tdt = cache[key]
    except (KeyError, TypeError):  # first use, or an unhashable dtype argument
        if dtype is None:
            dt = dtype_of(x)
            dt = _dtypes.float32 if dt is None else dt  # the op will reject x by name
        else:
            dt = dtype_arg(dtype, dtype_name)
        tdt = _dtypes.to_torch_dtype(sys.modules["torch"], dt)
        try:
            cache[key] = tdt
        except TypeError:
            pass
    return x.new_empty(tuple(x.shape) if shape is None else tuple(shape), dtype=tdt)


def empty_like(x, shape=None, dtype=None, dtype_name="out_dtype", name="x", out="out"):
    """A new uninitialised array of x's kind on x's device: numpy for numpy, ``x.new_empty``
    for torch, else a DeviceArray.  ``shape`` None: x's; ``dtype`` None: x's (any dtype
    numpy, ml_dtypes or torch names).  ``out``: the output's name, for the error raised when
    it cannot be allocated."""
    if type(x) is not _Described and kind_of(x) == TORCH:
        try:
            strided = x.layout is _torch_strided() and not x.is_nested
        except AttributeError:  # a stand-in with neither (the bench's fake torch)
            strided = True
        if not strided:
            _not_strided(x, name)  # new_empty would make a sparse output (named as the output), or x.shape raise
        try:
            return _torch_empty(x, shape, dtype, dtype_name)
        except RuntimeError as e:
            raise torch_allocation_error(e, out, name, tuple(x.shape) if shape is None else shape,
                                         x.dtype if dtype is None else dtype) from None
    if type(x) is _Described:
        k, xshape, xdt, devtype, devid = None, x.shape, x.dtype, x.devtype, x.devid
    else:
        k = kind_of(x)
        if k == NUMPY or k == OWN:
            xshape, xdt = tuple(x.shape), dtype_of(x)
            devtype, devid = (x._devtype, x._devid) if k == OWN else (None, None)
        else:
            xshape, xdt, devtype, devid = _describe(x, name)
    shape = xshape if shape is None else tuple(shape)
    dt = xdt if dtype is None else dtype_arg(dtype, dtype_name)
    if dt is None:  # x has a dtype numpy does not know; the op will reject x by name
        dt = _dtypes.float32
    return _allocate(k == NUMPY, shape, dt, devtype, devid, out, name)
