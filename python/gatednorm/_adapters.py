"""Array adapters: any supported array object -> a filled ``gatednorm_tensor`` (cdata).

Supported producers, in the order they are tried:
  * gatednorm.DeviceArray (and from_pointer views): a descriptor cached on the array;
  * numpy ndarrays (bf16/fp8 through ml_dtypes), host memory, device CPU;
  * torch.Tensor (CPU/CUDA/ROCm): read directly from data_ptr()/shape/stride()/dtype
    (the same information DLPack would carry, without building a capsule);
  * objects with ``__dlpack__``/``__dlpack_device__`` (preferred over the CUDA Array
    Interface, since DLPack carries exact dtype codes);
  * objects with ``__cuda_array_interface__`` (v3: CuPy, numba, hip-python DeviceArray, ...),
    device taken from ``gatednorm_pointer_device``;
  * other objects with ``__array_interface__`` (viewed through numpy).
Raw integer pointers and hip-python ``Pointer`` objects go through gatednorm.from_pointer().

Each op call converts its arguments into a list ``hold`` of things to keep alive until the
library call returns; consumed DLPack capsules in it are released (their deleter called)
by release().  The per-type adapter choice is cached, so a call costs one dict lookup per
argument before the producer's own protocol.
"""

from __future__ import annotations

import sys

import numpy as np

from . import _dlpack, _dtypes, _ffi, _runtime
from ._array import DeviceArray
from ._ffi import GatedNormError, argument_error, ffi

NUMPY, OWN, TORCH, DLPACK, DLPACK_CAI, CAI, ARRAY_IFACE, PROBE = range(8)

_kind_cache: dict = {np.ndarray: NUMPY, DeviceArray: OWN}
MAX_DIMS = 8
_Imported = _dlpack.Imported
_READ_ONLY_OR_COPIED = _dlpack.FLAG_READ_ONLY | _dlpack.FLAG_IS_COPIED
_DL_HEAD = _dlpack.HEAD_BYTES


def _classify_type(tp) -> int:
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


def release(hold) -> None:
    """Release every consumed DLPack tensor in ``hold`` (call once the library returned)."""
    for h in hold:
        if type(h) is _Imported:
            h.release()


_TT = None  # ffi.typeof("gatednorm_tensor *"), set with the first template
_templates: dict = {}  # (code, bits, device_type, device_id) -> gatednorm_tensor value


def _new_tensor():
    global _TT
    if _TT is None:
        _ffi.lib()  # the types exist once the header is parsed
        _TT = ffi.typeof("gatednorm_tensor *")
    return ffi.new(_TT)


def _tensor_like(code, bits, devtype, devid=0):
    """A new gatednorm_tensor with dtype and device filled in (copied from a cached
    template: cheaper than setting the five fields)."""
    tv = _templates.get((code, bits, devtype, devid))
    if tv is None:
        t = _new_tensor()
        t.device.device_type, t.device.device_id = devtype, devid
        t.dtype.code, t.dtype.bits, t.dtype.lanes = code, bits, 1
        tv = _templates[(code, bits, devtype, devid)] = t[0]
    return ffi.new(_TT, tv)


def _fail(name, what):
    raise argument_error("%s: %s" % (name, what))


def _set_shape_strides(t, name, nd, shape, estrides):
    if nd > MAX_DIMS:
        _fail(name, "%d dims; at most %d are supported" % (nd, MAX_DIMS))
    t.ndim = nd
    t.shape[0:nd] = shape
    t.strides[0:nd] = estrides


def _byte_to_elem_strides(name, strides, itemsize):
    es = []
    for s in strides:
        q, r = divmod(s, itemsize)
        if r:
            _fail(name, "byte strides %s are not multiples of the element size %d" % (tuple(strides), itemsize))
        es.append(q)
    return es


_contig_cache: dict = {}


def _contig(shape: tuple):
    """C-contiguous strides (elements) of the tuple ``shape`` (cached: shapes repeat call to
    call)."""
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


# ------------------------------------------------------------------------------- numpy
def _from_numpy(a, name, hold, writable):
    dl = _dtypes.NP_TO_DL.get(a.dtype)
    if dl is None:
        _fail(name, "numpy dtype %s has no DLPack equivalent" % a.dtype.str)
    if writable and not a.flags.writeable:
        _fail(name, "numpy array is read-only")
    t = _tensor_like(dl[0], dl[1], 1)
    nd = a.ndim
    if nd > MAX_DIMS:
        _fail(name, "%d dims; at most %d are supported" % (nd, MAX_DIMS))
    t.ndim = nd
    shape = a.shape
    t.shape[0:nd] = shape
    buf = None
    if a.flags.c_contiguous:
        try:
            buf = ffi.from_buffer(a)  # ~5x cheaper than building __array_interface__
        except (ValueError, TypeError, BufferError):
            buf = None
    if buf is not None:
        hold.append(buf)
        t.data = buf
        t.strides[0:nd] = _contig(shape)
    else:
        t.data = ffi.cast("void *", a.__array_interface__["data"][0])
        t.strides[0:nd] = _byte_to_elem_strides(name, a.strides, a.dtype.itemsize)
        hold.append(a)
    return t


# ------------------------------------------------------------------------------- torch
_torch_state = None  # (torch, dtype table, gpu device type, current-stream function)


def _torch():
    global _torch_state
    if _torch_state is None:
        torch = sys.modules["torch"]
        gpu = _runtime.ROCM if getattr(torch.version, "hip", None) else _runtime.CUDA
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        cur = raw if raw is not None else (lambda i: torch.cuda.current_stream(i).cuda_stream)
        _torch_state = (torch, _dtypes.torch_dtype_table(torch), gpu, cur)
    return _torch_state


def _from_torch(x, name, s, hold, writable):
    torch, table, gpu, _ = _torch_state or _torch()
    dl = table.get(x.dtype)
    if dl is None:
        return _from_dlpack(x, name, s, hold, writable)
    if x.is_cuda:
        t = _tensor_like(dl[0], dl[1], gpu, x.get_device())
    elif x.is_cpu:
        t = _tensor_like(dl[0], dl[1], 1)
    else:  # other torch devices: whatever DLPack says
        return _from_dlpack(x, name, s, hold, writable)
    t.data = ffi.cast("void *", x.data_ptr())
    nd = x.dim()
    if nd > MAX_DIMS:
        _fail(name, "%d dims; at most %d are supported" % (nd, MAX_DIMS))
    t.ndim = nd
    t.shape[0:nd] = x.shape
    t.strides[0:nd] = x.stride()
    return t


def torch_stream(x) -> int:
    if x.is_cuda:
        st = _torch_state or _torch()
        return st[3](x.get_device())
    return 0


# ------------------------------------------------------------------------------- dlpack
def _dlpack_stream_arg(devtype, s):
    """The ``stream`` argument for a producer's __dlpack__: the consumer's (our launch)
    stream, in DLPack's conventions (CUDA: 1 = legacy default, 0 is never passed;
    ROCm: 0 = default stream; None for host devices)."""
    if devtype == 2 or devtype == 13:
        return s if s else 1
    if devtype == 10:
        return s
    return None


def _from_dlpack(x, name, s, hold, writable):
    try:
        devtype = int(x.__dlpack_device__()[0])
        sa = _dlpack_stream_arg(devtype, s)
        try:
            cap = x.__dlpack__(stream=sa, max_version=(1, 0))
        except TypeError:  # producer predating DLPack 1.0's max_version
            cap = x.__dlpack__(stream=sa) if sa is not None else x.__dlpack__()
        imp = _dlpack.consume(cap)
    except GatedNormError:
        raise
    except Exception as e:
        raise argument_error("%s: DLPack export failed: %s: %s" % (name, type(e).__name__, e)) from e
    hold.append(imp)
    if writable and imp.flags & _READ_ONLY_OR_COPIED:
        _fail(name, "the DLPack producer marked this tensor %s" % (
            "read-only" if imp.flags & _dlpack.FLAG_READ_ONLY else "as a copy (writes would be lost)"))
    d = imp.t
    t = _new_tensor()
    # data, device, ndim, dtype: same layout in DLTensor and gatednorm_tensor (one copy)
    ffi.memmove(t, d, _DL_HEAD)
    if t.dtype.lanes != 1:
        _fail(name, "vector dtypes (lanes=%d) are not supported" % t.dtype.lanes)
    nd = t.ndim
    if nd > MAX_DIMS or nd < 0:
        _fail(name, "%d dims; at most %d are supported" % (nd, MAX_DIMS))
    if nd:
        shape = d.shape[0:nd]
        t.shape[0:nd] = shape
        st = d.strides
        t.strides[0:nd] = _contig(tuple(shape)) if st == ffi.NULL else st[0:nd]
    t.byte_offset = d.byte_offset
    return t


# ------------------------------------------------------------------------ CUDA array interface
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


def cai_stream(cai) -> int | None:
    """Launch stream implied by a CAI ``stream`` entry (None if the producer gave none)."""
    cs = cai.get("stream")
    if cs is None:
        return None
    cs = int(cs)
    return 0 if cs == 1 else cs  # 1: the legacy default stream == our NULL stream


def _from_cai(x, name, s, hold, writable, cai=None):
    try:
        if cai is None:
            cai = x.__cuda_array_interface__
        shape = tuple(cai["shape"])  # a list is allowed; the strides cache wants a tuple
        ptr, ro = cai["data"]
        typestr = cai["typestr"]
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise argument_error("%s: bad __cuda_array_interface__: %s" % (name, e)) from None
    if cai.get("mask") is not None:
        _fail(name, "masked arrays (__cuda_array_interface__ 'mask') are not supported")
    if writable and ro:
        _fail(name, "__cuda_array_interface__ marks this array read-only")
    dt = _typestr_dtype(name, typestr)
    dl = _dtypes.NP_TO_DL.get(dt)
    if dl is None:
        _fail(name, "dtype %s has no DLPack equivalent" % dt)
    strides = cai.get("strides")
    nd = len(shape)
    t = _new_tensor()
    _set_shape_strides(t, name, nd, shape,
                       _contig(shape) if strides is None else _byte_to_elem_strides(name, strides, dt.itemsize))
    t.data = ffi.cast("void *", ptr)
    t.dtype.code, t.dtype.bits, t.dtype.lanes = dl[0], dl[1], 1
    if ptr:
        t.device.device_type, t.device.device_id = _runtime.pointer_device(ptr)
    else:
        t.device.device_type = 1  # NULL: let the op reject it by name
    # CAI v3: the consumer must order its work after the producer's stream.  Without an
    # event API in the C ABI, a different stream is waited for on the host.
    cs = cai_stream(cai)
    if cs is not None and cs != s and t.device.device_type not in _runtime.HOST_TYPES:
        _runtime.synchronize(cs)
    hold.append(x)
    return t


# ------------------------------------------------------------------------------- own
def _wait_pending(a: DeviceArray, sync) -> None:
    """``a``'s memory has a pending library write on another stream than the launch stream:
    wait for it on the host (the C ABI has no events; the library's streams are non-blocking,
    so stream order alone would not do)."""
    ps = sync.stream
    if ps is not None:
        if a._devtype not in _runtime.HOST_TYPES:
            _runtime.synchronize(ps)
        sync.stream = None


def own_tensor(a: DeviceArray):
    t = a._t
    if t is None:
        t = _new_tensor()
        t.data = ffi.cast("void *", a._ptr)
        t.device.device_type, t.device.device_id = a._devtype, a._devid
        t.dtype.code, t.dtype.bits, t.dtype.lanes = a._dl[0], a._dl[1], 1
        _set_shape_strides(t, "array", len(a._shape), a._shape, a._estrides)
        a._t = t
    return t


# ------------------------------------------------------------------------------- entry
def convert(x, name: str, s: int, hold: list, writable: bool, kind: int | None = None, cai=None):
    """gatednorm_tensor * for array ``x`` (argument ``name``), launching on stream ``s``."""
    if kind is None:
        kind = kind_of(x)
    if kind == OWN:
        t = x._t or own_tensor(x)
        sync = x._sync
        ps = sync.stream
        if ps is not None and ps != s:  # written on another stream and not yet waited for
            _wait_pending(x, sync)
        if writable:
            sync.stream = s
        return t
    if kind == NUMPY:
        return _from_numpy(x, name, hold, writable)
    if kind == TORCH:
        return _from_torch(x, name, s, hold, writable)
    if kind == DLPACK or kind == DLPACK_CAI:
        return _from_dlpack(x, name, s, hold, writable)
    if kind == CAI:
        return _from_cai(x, name, s, hold, writable, cai)
    if kind == ARRAY_IFACE:
        a = np.asarray(x)
        hold.append(a)
        return _from_numpy(a, name, hold, writable)
    if isinstance(x, int) or hasattr(x, "__int__"):
        _fail(name, "got a bare pointer (%s); wrap it with gatednorm.from_pointer(ptr, shape, dtype)"
              % type(x).__name__)
    _fail(name, "expected an array (numpy, DLPack, __cuda_array_interface__, gatednorm.DeviceArray), "
                "got %s" % type(x).__name__)


def resolve_stream(stream, x, kind):
    """(launch stream handle, CAI dict of x if read) for a call whose first input is x:
    the explicit ``stream``; else torch's current stream for a torch tensor; else the
    ``stream`` of x's __cuda_array_interface__; else 0 (the default stream)."""
    if stream is not None:
        return _runtime.stream_handle(stream), None
    if kind == TORCH:
        return torch_stream(x), None
    if kind == CAI or kind == DLPACK_CAI:
        try:
            cai = x.__cuda_array_interface__
        except Exception:
            return 0, None
        cs = cai_stream(cai)
        return (cs or 0), (cai if kind == CAI else None)
    return 0, None


def dtype_of(t) -> np.dtype:
    return _dtypes.DL_TO_NP.get((t.dtype.code, t.dtype.bits))
