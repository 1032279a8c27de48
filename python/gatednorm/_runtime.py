"""Library info and runtime helpers (devices, streams) on top of the C ABI."""

from __future__ import annotations

import numbers
import operator
import re

import numpy as np

from . import _ffi
from ._ffi import GatedNormError, argument_error, check, ffi

CPU = 1
CUDA = 2
CUDA_HOST = 3
ROCM = 10
ROCM_HOST = 11
CUDA_MANAGED = 13
#: device types whose memory lives on the host for gatednorm's purposes
HOST_TYPES = (CPU, CUDA_HOST, ROCM_HOST)
_TYPE_NAMES = {CPU: "cpu", CUDA: "cuda", CUDA_HOST: "cuda_host", ROCM: "rocm", ROCM_HOST: "rocm_host",
               CUDA_MANAGED: "cuda_managed"}


def integer(name, v) -> int:
    """An int (numpy integers too); bools, floats, strings, None refused (the call layer's
    option check, here because the runtime's own arguments need it too)."""
    if type(v) is int:
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise argument_error("%s: expected an integer, got %r" % (name, v))
    return int(v)


def version() -> str:
    """Version of the loaded library, 'major.minor.patch'."""
    v = int(_ffi.lib().gatednorm_version())
    return "%d.%d.%d" % (v >> 16, (v >> 8) & 0xFF, v & 0xFF)


def last_kernel() -> str:
    """Debug aid: the kernel this thread's last call that did work ran ("cpu" for host
    arrays, e.g. "add_rmsnorm.row.vec16" on a GPU; "" before any): which path the library's
    size rules chose.  The names are not a stable interface."""
    return ffi.string(_ffi.lib().gatednorm_last_kernel()).decode("ascii")


_MAX_THREADS = 256  # the CPU pool's most (cpu_pool.cpp kMaxThreads; the C entry clamps to it)


def set_num_threads(num_threads: int) -> None:
    """Threads of the CPU backend (host arrays; the calling thread included): ``n`` in 1..256
    sets it, 0 restores the default ($GATEDNORM_NUM_THREADS if it is a positive integer, any
    other value being ignored, else the CPUs of the process's main thread's affinity mask, at
    most 256; the workers run on those CPUs).  Results are bit-identical whatever the count."""
    n = integer("num_threads", num_threads)
    if not 0 <= n <= _MAX_THREADS:
        raise _ffi.argument_error("num_threads: expected 0 (the default) or a count in 1..%d (the pool's most), got %d"
                                  % (_MAX_THREADS, n))
    check(_ffi.lib().gatednorm_set_num_threads(n), "set_num_threads")


def get_num_threads() -> int:
    """The CPU backend's thread count (set_num_threads)."""
    n = ffi.new("int32_t *")
    check(_ffi.lib().gatednorm_get_num_threads(n), "get_num_threads")
    return int(n[0])


def build_info() -> str:
    """Backend, GPU targets and compiler the library was built with."""
    return ffi.string(_ffi.lib().gatednorm_build_info()).decode("utf-8", "replace")


_device_count = None


def device_count(refresh: bool = False) -> int:
    """Number of GPUs the library's GPU backend sees (0 without a GPU backend or GPU)."""
    global _device_count
    if _device_count is None or refresh:
        lib = _ffi.lib()
        n = ffi.new("int32_t *")
        st = lib.gatednorm_device_count(n)
        if st == lib.GATEDNORM_STATUS_NO_DEVICE:
            _device_count = 0
        else:
            check(st, "gatednorm_device_count")
            _device_count = int(n[0])
    return _device_count


def device_name(device_id: int = 0) -> str:
    buf = ffi.new("char[]", 256)
    check(_ffi.lib().gatednorm_device_name(int(device_id), buf, 256), "gatednorm_device_name")
    return ffi.string(buf).decode("utf-8", "replace")


_DEVICE_ATTRS = (("multiprocessors", "GATEDNORM_DEVICE_ATTR_MULTIPROCESSORS"), ("warp_size", "GATEDNORM_DEVICE_ATTR_WARP_SIZE"),
                 ("l2_bytes", "GATEDNORM_DEVICE_ATTR_L2_BYTES"))


def device_properties(device_id: int = 0) -> dict:
    """GPU ``device_id``'s name and the properties the library's size rules read:
    ``multiprocessors`` (SMs / compute units), ``warp_size``, ``l2_bytes``."""
    lib = _ffi.lib()
    v = ffi.new("int64_t *")
    props = {"name": device_name(device_id)}
    for key, attr in _DEVICE_ATTRS:
        check(lib.gatednorm_device_attribute(int(device_id), getattr(lib, attr), v), "gatednorm_device_attribute")
        props[key] = int(v[0])
    return props


def gpu_device_type() -> int | None:
    """DLPack device type of this build's GPUs (CUDA=2 or ROCM=10); None without GPUs."""
    if device_count() == 0:
        return None
    return int(_ffi.lib().gatednorm_gpu_device_type()) or None


def make_device(device_type: int, device_id: int):
    """A gatednorm_device struct (cdata, by value)."""
    d = ffi.new("gatednorm_device *")
    d.device_type, d.device_id = device_type, device_id
    return d[0]


def pointer_device(ptr: int) -> tuple:
    """(device_type, device_id) that the library says ``ptr`` lives on."""
    lib = _ffi.lib()
    d = ffi.new("gatednorm_device *")
    check(lib.gatednorm_pointer_device(ffi.cast("void *", ptr), d), "gatednorm_pointer_device")
    return (int(d.device_type), int(d.device_id))


def device_str(device_type: int, device_id: int) -> str:
    if device_type == CPU:
        return "cpu"
    return "%s:%d" % (_TYPE_NAMES.get(device_type, "dev%d" % device_type), device_id)


def parse_device(device, name: str = "device") -> tuple:
    """(device_type, device_id) for 'cpu', 'cuda:N', 'gpu:N', 'rocm:N', 'hip:N', an int N
    (GPU N), a (type, id) tuple, a gatednorm_device cdata, a torch.device, or an object with
    ``__dlpack_device__``.  None means GPU 0 if there is one, else the CPU."""
    if device is None:
        return (gpu_device_type(), 0) if device_count() > 0 else (CPU, 0)
    if isinstance(device, int) and not isinstance(device, bool):
        return (_require_gpu(name), device)
    if isinstance(device, tuple) and len(device) == 2:
        try:
            if any(isinstance(v, bool) for v in device):
                raise TypeError
            t, i = operator.index(device[0]), operator.index(device[1])
        except TypeError:
            raise argument_error("%s: a (device_type, device_id) pair of ints, got %r" % (name, device)) from None
        if not (0 <= t < 1 << 31 and 0 <= i < 1 << 31):
            raise argument_error("%s: device type and id must lie in [0, 2^31), got %r" % (name, device))
        return (t, i)
    if isinstance(device, ffi.CData) or hasattr(device, "__dlpack_device__"):
        try:
            t, i = ((device.device_type, device.device_id) if isinstance(device, ffi.CData)
                    else device.__dlpack_device__())
            pair = (int(t), int(i))
        except (AttributeError, TypeError, ValueError) as e:  # another struct; a malformed pair
            raise argument_error("%s: no (device_type, device_id) in %r (%s: %s)" % (name, device, type(e).__name__, e)) from None
        return parse_device(pair, name)  # the pair's range rule
    s = str(device).strip().lower()  # torch.device prints as 'cuda:0' / 'cpu'
    m = re.fullmatch(r"(cpu|cuda|gpu|rocm|hip)(?::(\d+))?", s)
    if not m:
        raise argument_error("%s: expected 'cpu', 'cuda:N', an int or a (type, id) pair, got %r" % (name, device))
    if m.group(1) == "cpu":
        return (CPU, 0)
    return (_require_gpu(name), int(m.group(2) or 0))


def _require_gpu(name: str) -> int:
    t = gpu_device_type()
    if t is None:
        raise GatedNormError(-3, "%s: no GPU available (this library: %s)" % (name, build_info()))
    return t


# --------------------------------------------------------------------------------- streams
def stream_handle(stream) -> int:
    """Integer handle of a stream given as an int, a torch.cuda.Stream (``cuda_stream``), a
    cupy Stream (``ptr``), an object with ``__cuda_stream__()``, or anything int() accepts
    (hip-python's hipStream_t, ctypes.c_void_p via .value)."""
    if stream is None:
        return 0
    h = stream if type(stream) is int else _handle_of(stream)
    if 0 <= h < (1 << 64):
        return h
    raise argument_error("stream: handle %d is not a pointer value (0 <= handle < 2**64)" % h)


_INT_NAMES = frozenset(("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"))


def integer_like(v) -> bool:
    """Whether int(v) is v's value, not a conversion: no bool, string, non-integral number
    (float, Decimal, Fraction, numpy floats), or array / tensor of a non-integer dtype
    (hip-python's hipStream_t and other handle objects have no dtype)."""
    if isinstance(v, (bool, np.bool_, str, bytes, bytearray)):
        return False
    if isinstance(v, numbers.Number):
        return isinstance(v, numbers.Integral)
    dt = getattr(v, "dtype", None)
    return dt is None or (getattr(dt, "name", None) or str(dt).rpartition(".")[2]) in _INT_NAMES


def _handle_of(stream) -> int:
    """The integer a stream object stands for (range not yet checked)."""
    h = getattr(stream, "cuda_stream", None)
    if h is not None:
        return int(h)
    h = getattr(stream, "__cuda_stream__", None)
    if h is not None:
        v = h()
        return int(v[1]) if isinstance(v, tuple) else int(v)
    h = getattr(stream, "ptr", None)
    if isinstance(h, int):
        return h
    if hasattr(stream, "value") and not hasattr(stream, "__int__"):  # ctypes.c_void_p
        return int(stream.value or 0)
    if not integer_like(stream):  # int() would take them, silently truncated or parsed
        raise argument_error("stream: expected a stream object or an integer handle, got %r" % (stream,))
    try:
        return int(stream)
    except (TypeError, ValueError):
        raise argument_error("stream: cannot get a stream handle from %s" % type(stream).__name__) from None


def synchronize(stream=None) -> None:
    """Wait for all work on ``stream`` (None: the default stream)."""
    check(_ffi.lib().gatednorm_stream_synchronize(ffi.cast("void *", stream_handle(stream))),
          "gatednorm_stream_synchronize")


def device_synchronize(device_id: int = 0) -> None:
    check(_ffi.lib().gatednorm_device_synchronize(int(device_id)), "gatednorm_device_synchronize")


class Stream:
    """A stream created by the library on GPU ``device_id``; int(stream) is its handle."""

    def __init__(self, device_id: int = 0):
        lib = _ffi.lib()
        p = ffi.new("void **")
        check(lib.gatednorm_stream_create(int(device_id), p), "gatednorm_stream_create")
        self._h = int(ffi.cast("uintptr_t", p[0]))
        self.device_id = device_id

    def __int__(self):
        return self._h

    def synchronize(self):
        synchronize(self._h)

    def __del__(self):
        h, self._h = getattr(self, "_h", 0), 0
        if h and _ffi._lib is not None:
            try:
                _ffi._lib.gatednorm_stream_destroy(ffi.cast("void *", h))
            except Exception:  # pragma: no cover
                pass
