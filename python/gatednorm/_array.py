"""gatednorm.DeviceArray: an n-d array in memory from the library's own allocator.

It gives numpy users the GPU path with no other package, and is also what
``gatednorm.from_pointer`` returns (then as a non-owning view of foreign memory).
It exports ``__dlpack__``/``__dlpack_device__`` and, for GPU memory,
``__cuda_array_interface__`` (v3), so CuPy / PyTorch / JAX / numba / numpy can read it.
"""

from __future__ import annotations

import math

import numpy as np

from . import _dtypes, _ffi, _runtime
from ._ffi import OUT_OF_MEMORY, GatedNormError, argument_error, check, ffi
from ._runtime import CPU, HOST_TYPES

__all__ = ["DeviceArray", "from_pointer"]


class _Pending:
    """Write-ordering state shared by every DeviceArray over one block of memory (the
    allocation and all its views, or a from_pointer view and its views).

    ``stream``: the stream of the last library op that wrote any of these arrays and has not
    been waited for (0: the default stream), or None when no such write is pending.  The
    library's own streams are non-blocking, so a read on another stream (an op input, an
    export, a host copy on the default stream) must first wait for that stream.  Keeping one
    stream per block is enough: an op that writes on another stream waits for the pending
    one first (see _adapters.convert), so at most one stream has pending writes.

    ``readonly``: the memory must not be written (a from_pointer view over a read-only
    buffer): ops refuse it as an output, copy_ / fill_ refuse, exports say so.
    """

    __slots__ = ("stream", "readonly")

    def __init__(self, readonly=False):
        self.stream = None
        self.readonly = readonly


class _Allocation(_Pending):
    """Owns one gatednorm_malloc() block; frees it when the last array using it goes."""

    __slots__ = ("ptr", "device_type", "device_id", "nbytes", "__weakref__")

    def __init__(self, device_type: int, device_id: int, nbytes: int):
        super().__init__()
        lib = _ffi.lib()
        p = ffi.new("void **")
        self.ptr = 0
        check(lib.gatednorm_malloc(_runtime.make_device(device_type, device_id), max(int(nbytes), 1), p),
              "gatednorm_malloc")
        self.ptr = int(ffi.cast("uintptr_t", p[0]))
        self.device_type, self.device_id, self.nbytes = device_type, device_id, nbytes

    def __reduce__(self):
        # a copy (pickle, copy.deepcopy) would hold the same pointer and free it again
        raise TypeError("a gatednorm memory block cannot be copied or pickled")

    def __del__(self):
        ptr, self.ptr = self.ptr, 0
        lib = _ffi._lib
        if ptr and lib is not None:
            try:
                lib.gatednorm_free(_runtime.make_device(self.device_type, self.device_id), ffi.cast("void *", ptr))
            except Exception:  # pragma: no cover - interpreter shutdown
                pass


def _c_strides(shape) -> tuple:
    st, acc = [], 1
    for n in reversed(shape):
        st.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(st))


def _contiguous_strides(shape, name="shape") -> tuple:
    """C-contiguous element strides of ``shape`` for a new array or view; each must fit
    int64 (a descriptor's), which a zero-size shape with huge other extents need not (its
    byte count is 0; such strides escaped as struct.error / OverflowError: review)."""
    st = _c_strides(shape)
    if st and st[0] >= 1 << 63:
        raise argument_error("%s: %s has C-contiguous strides past int64" % (name, shape))
    return st


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int_tuple(values, name) -> tuple:
    """An int or a sequence of ints (numpy integers too; bools and floats refused) as a tuple."""
    if _is_int(values):
        values = (values,)
    try:
        vals = tuple(values)
    except TypeError:
        raise argument_error("%s: expected an int or a sequence of ints, got %r" % (name, values)) from None
    if not all(_is_int(v) for v in vals):
        raise argument_error("%s: expected ints, got %r" % (name, values))
    vals = tuple(int(v) for v in vals)
    # a descriptor holds int64 extents and strides (struct.error escaped past them)
    if vals and (min(vals) < -(1 << 63) or max(vals) >= 1 << 63):
        raise argument_error("%s: %d does not fit int64" % (name, max(vals, key=abs)))
    return vals


def _norm_shape(shape, name="shape") -> tuple:
    shape = _int_tuple(shape, name)
    if any(n < 0 for n in shape):
        raise argument_error("%s: negative extent in %s" % (name, shape))
    return shape


class DeviceArray:
    """An n-d array in memory from ``gatednorm_malloc`` on any device (CPU included).

    ``DeviceArray(shape, dtype, device=None)`` allocates uninitialized memory; ``device`` is
    'cpu', 'cuda:N' (or 'gpu:N', 'rocm:N', an int N), a (device_type, device_id) pair or a
    gatednorm_device; None means GPU 0 when there is one, else the CPU.

    Slicing with ints and slices gives views.  ``strides`` are in bytes, as numpy's;
    ``element_strides`` in elements, as DLPack's.

    Stream ordering: an op writing the array (or any view of its memory) on a stream is
    waited for, on the host, before the memory is read on another stream: as an op input,
    through ``__dlpack__`` (``stream=None`` meaning the default stream) or by a host copy.
    ``__cuda_array_interface__`` reports the pending stream instead, and is absent for
    dtypes without an exact typestr (bf16, fp8): use DLPack for those.  This bookkeeping is
    one record a memory block, kept without a lock: ops writing views of one block from
    several Python threads at once, on different streams, are not ordered by it (one
    thread's record can replace another's); synchronize such threads yourself.

    A ``__dlpack__`` capsule that no consumer takes keeps the memory alive until eight more
    exports (a consumer refusing a capsule drops it with its error pending, when the
    capsule's destructor, written in Python, cannot run without losing that error).

    The memory is freed (``cudaFree`` / ``hipFree``) when the last view goes.  Keep arrays
    alive across a CUDA/HIP graph capture: a free during a capture invalidates it (call
    ``gc.collect()`` before capturing if unreachable arrays may be pending).
    """

    __slots__ = ("_ptr", "_shape", "_estrides", "_dtype", "_dl", "_devtype", "_devid", "_base",
                 "_t", "_sync", "__weakref__")

    def __init__(self, shape, dtype=np.float32, device=None):
        shape = _norm_shape(shape)
        dt = _dtypes.dtype_arg(dtype, "dtype")
        if _dtypes.dl_lookup(dt) is None:  # before the allocation (it was made, then refused: review)
            raise argument_error("dtype: %s has no DLPack code" % dt)
        devtype, devid = _runtime.parse_device(device)
        nbytes = math.prod(shape) * dt.itemsize
        if nbytes >= 1 << 63:
            raise argument_error("shape: %s of %s is %d bytes, past what any device can hold" % (shape, dt, nbytes))
        estrides = _contiguous_strides(shape)
        try:
            alloc = _Allocation(devtype, devid, nbytes)
        except GatedNormError as e:  # the library names its own argument (bytes): name ours
            if e.status != OUT_OF_MEMORY:
                raise
            raise GatedNormError(e.status, "shape: %s of %s (%d bytes) cannot be allocated: %s"
                                 % (shape, dt, nbytes, e.message)) from None
        self._init(alloc.ptr, shape, estrides, dt, devtype, devid, alloc, alloc)

    def _init(self, ptr, shape, estrides, dt, devtype, devid, base, sync):
        self._ptr = ptr
        self._shape = shape
        self._estrides = estrides
        self._dtype = dt
        self._dl = _dtypes.dl_lookup(dt)
        if self._dl is None:
            raise argument_error("dtype: %s has no DLPack code" % dt)
        self._devtype = devtype
        self._devid = devid
        self._base = base
        self._t = None  # cached gatednorm_tensor (metadata never changes)
        # The pending-write state (a _Pending) of the memory block, shared with every other
        # view of it.  Used to order op inputs, exports and host copies after library writes.
        self._sync = sync

    @classmethod
    def _view(cls, ptr, shape, estrides, dt, devtype, devid, base, sync):
        self = cls.__new__(cls)
        self._init(ptr, shape, estrides, dt, devtype, devid, base, sync)
        return self

    @property
    def _stream(self):
        """Stream of the last pending library write to this array's memory block (0: the
        default stream), or None: shared by all views of the block."""
        return self._sync.stream

    @_stream.setter
    def _stream(self, s):
        self._sync.stream = s

    # ------------------------------------------------------------------ copies
    # The default copies of a __slots__ class copied the raw pointer: a deep copy or a
    # pickled-and-loaded array then owned a second _Allocation of the same block and freed it
    # twice (abort), or read it after the original freed it (review).
    def __copy__(self) -> "DeviceArray":
        """A view of the same memory (as before: a shallow copy shares it)."""
        return DeviceArray._view(self._ptr, self._shape, self._estrides, self._dtype, self._devtype, self._devid,
                                 self._base, self._sync)

    def __deepcopy__(self, memo) -> "DeviceArray":
        """A new array on the same device with a copy of the elements."""
        return _rebuild(self.numpy(), self._devtype, self._devid)

    def __reduce__(self):
        """Pickled as its elements and device: loading makes a new array there."""
        return (_rebuild, (self.numpy(), self._devtype, self._devid))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, shape, dtype=np.float32, device=None) -> "DeviceArray":
        return cls(shape, dtype, device)

    @classmethod
    def zeros(cls, shape, dtype=np.float32, device=None) -> "DeviceArray":
        a = cls(shape, dtype, device)
        a._memset(0)
        return a

    @classmethod
    def from_numpy(cls, arr, device=None) -> "DeviceArray":
        """A contiguous copy of a numpy array (bf16/fp8 through ml_dtypes) on ``device``; a
        byte-swapped one is copied in native order."""
        arr = np.asarray(arr)
        if arr.dtype.byteorder not in "=|":  # the values, not the bytes: a device array is native
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if _dtypes.dl_lookup(arr.dtype) is None:  # named as this call's argument (it said "dtype": review)
            raise argument_error("arr: numpy dtype %s has no DLPack code" % arr.dtype)
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d array 1-d)
            arr = arr.copy(order="C")
        a = cls(arr.shape, arr.dtype, device)
        a._copy_in_contiguous(arr)
        return a

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return math.prod(self._shape)

    @property
    def itemsize(self) -> int:
        return self._dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    @property
    def strides(self) -> tuple:
        """Strides in bytes (numpy convention)."""
        return tuple(s * self._dtype.itemsize for s in self._estrides)

    @property
    def element_strides(self) -> tuple:
        """Strides in elements (DLPack / gatednorm_tensor convention)."""
        return self._estrides

    @property
    def data_ptr(self) -> int:
        """Address of element [0, 0, ...]."""
        return self._ptr

    @property
    def base(self):
        """What a from_pointer view keeps alive: its ``owner`` (a DeviceArray or other object),
        else its ``ptr`` (an int or pointer object); None for an array that owns its memory."""
        b = self._base
        if isinstance(b, _OwnerAndPointer):
            return b.owner
        return None if isinstance(b, _Allocation) else b

    @property
    def device(self) -> str:
        return _runtime.device_str(self._devtype, self._devid)

    @property
    def device_type(self) -> int:
        return self._devtype

    @property
    def device_id(self) -> int:
        return self._devid

    @property
    def is_contiguous(self) -> bool:
        return all(n <= 1 or s == c for n, s, c in zip(self._shape, self._estrides, _c_strides(self._shape)))

    def __len__(self):
        if not self._shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self._shape[0]

    def __repr__(self):
        return "DeviceArray(shape=%s, dtype=%s, device=%r%s)" % (
            self._shape, self._dtype.name, self.device, "" if self.is_contiguous else ", strides=%s" % (self.strides,))

    # ------------------------------------------------------------------ views
    def __getitem__(self, key) -> "DeviceArray":
        if not isinstance(key, tuple):
            key = (key,)
        ellipses = [j for j, k in enumerate(key) if k is Ellipsis]  # (key.index compared arrays with ==: review)
        if len(ellipses) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if ellipses:
            i = ellipses[0]
            key = key[:i] + (slice(None),) * (len(self._shape) - len(key) + 1) + key[i + 1:]
        if len(key) > len(self._shape):
            raise IndexError("too many indices for a %d-d DeviceArray" % len(self._shape))
        ptr, shape, strides = self._ptr, [], []
        isz = self._dtype.itemsize
        for d, (n, s) in enumerate(zip(self._shape, self._estrides)):
            k = key[d] if d < len(key) else slice(None)
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                m = len(range(start, stop, step))
                if m:
                    ptr += start * s * isz
                if not -(1 << 63) <= s * step < 1 << 63:  # a descriptor's int64 (a step of 2^61 on a stride of 4)
                    raise argument_error("key: step %d on axis %d gives an element stride of %d, past int64"
                                         % (step, d, s * step))
                shape.append(m)
                strides.append(s * step)
            else:
                if not _is_int(k):  # as numpy: a float or a bool is no index here
                    raise IndexError("only integers, slices and ... index a DeviceArray, got %r" % (k,))
                i = int(k)
                if i < -n or i >= n:
                    raise IndexError("index %d is out of bounds for axis %d with size %d" % (i, d, n))
                ptr += (i % n) * s * isz
        return DeviceArray._view(ptr, tuple(shape), tuple(strides), self._dtype, self._devtype, self._devid,
                                 self._base, self._sync)

    def view(self, shape=None, dtype=None, element_strides=None) -> "DeviceArray":
        """Reinterpret this array's memory: element 0 at this array's, with ``shape``,
        ``dtype`` and ``element_strides`` (None: C-contiguous, covering exactly this array's
        bytes); every element of the view must lie within the bytes this array spans."""
        dt = self._dtype if dtype is None else _dtypes.dtype_arg(dtype, "dtype")
        shape = self._shape if shape is None else _norm_shape(shape)
        if element_strides is None:
            if not self.is_contiguous:
                raise argument_error("element_strides: required to view a non-contiguous array")
            if math.prod(shape) * dt.itemsize != self.nbytes:
                raise argument_error("shape: %s x %s does not cover this array's %d bytes" % (shape, dt, self.nbytes))
            element_strides = _contiguous_strides(shape)
        strides = _int_tuple(element_strides, "element_strides")
        if len(strides) != len(shape):
            raise argument_error("element_strides: %d strides for %d dims" % (len(strides), len(shape)))
        if math.prod(shape):
            isz = dt.itemsize
            lo = sum(min(0, (n - 1) * st) for n, st in zip(shape, strides)) * isz
            hi = (sum(max(0, (n - 1) * st) for n, st in zip(shape, strides)) + 1) * isz
            start, nbytes, _ = self._span()
            if self._ptr + lo < start or self._ptr + hi > start + nbytes:
                raise argument_error("shape: %s with element_strides %s of %s reaches bytes [%d, %d) of element 0, "
                                     "outside this array's span [%d, %d)" % (shape, strides, dt, lo, hi,
                                                                            start - self._ptr, start + nbytes - self._ptr))
        return DeviceArray._view(self._ptr, shape, strides, dt, self._devtype, self._devid, self._base, self._sync)

    def reshape(self, *shape) -> "DeviceArray":
        if len(shape) == 1 and not _is_int(shape[0]):
            shape = shape[0]
        shape = list(_int_tuple(shape, "shape"))
        if -1 in shape:
            i = shape.index(-1)
            rest = math.prod(n for j, n in enumerate(shape) if j != i)
            shape[i] = self.size // max(rest, 1)
        if not self.is_contiguous:  # (view's own message named its element_strides, which reshape has not: review)
            raise argument_error("self: reshape takes a contiguous array; this one has strides %s (copy it first, "
                                 "or view(shape, element_strides=...))" % (self.strides,))
        return self.view(tuple(shape))

    # ------------------------------------------------------------------ host transfers
    def _span(self):
        """(first byte address, byte length, byte offset of element 0 in the span)."""
        isz = self._dtype.itemsize
        if any(n == 0 for n in self._shape):
            return self._ptr, 0, 0
        lo = sum(min(0, (n - 1) * s) for n, s in zip(self._shape, self._estrides))
        hi = sum(max(0, (n - 1) * s) for n, s in zip(self._shape, self._estrides))
        return self._ptr + lo * isz, (hi - lo + 1) * isz, -lo * isz

    def _memcpy(self, dst: int, src: int, nbytes: int):
        if nbytes:
            lib = _ffi.lib()
            check(lib.gatednorm_memcpy(ffi.cast("void *", dst), ffi.cast("void *", src), nbytes, ffi.NULL),
                  "gatednorm_memcpy")
            if self._devtype not in HOST_TYPES:
                check(lib.gatednorm_stream_synchronize(ffi.NULL), "gatednorm_stream_synchronize")

    def _wait_writer(self):
        # Work the library queued on a non-default stream must finish before we copy on the
        # default stream (which does not wait for the library's non-blocking streams).
        sync = self._sync
        ps = sync.stream
        if ps is not None:
            if ps and self._devtype not in HOST_TYPES:
                _runtime.synchronize(ps)
            sync.stream = None  # the copy that follows runs on the default stream, after the rest

    def _read_span(self):
        start, nbytes, off = self._span()
        buf = np.empty(nbytes, np.uint8)
        self._wait_writer()
        self._memcpy(buf.ctypes.data, start, nbytes)
        return buf, off

    def numpy(self) -> np.ndarray:
        """A host numpy copy (waits for the copy)."""
        if self.is_contiguous:
            out = np.empty(self._shape, self._dtype)
            self._wait_writer()
            self._memcpy(out.ctypes.data, self._ptr, out.nbytes)
            return out
        return self._elements(*self._read_span()).copy()

    def _elements(self, span: np.ndarray, off: int) -> np.ndarray:
        """This array's elements as a numpy view over ``span`` (uint8: the bytes of _span(),
        element 0 at byte ``off``)."""
        return np.lib.stride_tricks.as_strided(span.view(self._dtype)[off // self._dtype.itemsize:], self._shape,
                                               self.strides)

    def __array__(self, dtype=None, copy=None):
        if copy is False:  # NumPy 2's protocol: refuse rather than copy silently
            raise ValueError("DeviceArray: numpy arrays of it are always copies (copy=False cannot be honoured)")
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def _copy_in_contiguous(self, arr: np.ndarray):
        self._wait_writer()
        self._memcpy(self._ptr, arr.ctypes.data, arr.nbytes)

    def _writable(self):
        if self._sync.readonly:
            raise argument_error("self: this DeviceArray is a view of read-only memory (from_pointer over a read-only "
                                 "buffer); it cannot be written")

    def copy_(self, src) -> "DeviceArray":
        """Write a host array (broadcast to this shape, cast to this dtype) into this array."""
        self._writable()
        src = self._host_source(src, "src")
        if self.is_contiguous:
            self._copy_in_contiguous(np.ascontiguousarray(src))
            return self
        if self._devtype in HOST_TYPES:
            # Host memory: write the view's elements in place, nothing between them (a
            # read-modify-write of the span would undo a concurrent write to the elements
            # between, e.g. another thread filling the odd columns while this fills the even).
            start, nbytes, off = self._span()
            self._wait_writer()
            self._elements(np.frombuffer(ffi.buffer(ffi.cast("char *", start), nbytes), np.uint8), off)[...] = src
            return self
        # Device memory: a read-modify-write of the byte span the view covers (elements
        # between the view's elements are written back unchanged; not safe against a
        # concurrent write to those elements).
        buf, off = self._read_span()
        self._elements(buf, off)[...] = src
        start, nbytes, _ = self._span()
        self._memcpy(start, buf.ctypes.data, nbytes)
        return self

    def fill_(self, value) -> "DeviceArray":
        """Set every element to ``value`` (e.g. float('nan') to poison an output)."""
        return self.copy_(self._host_source(value, "value"))

    def _host_source(self, src, name):
        """``src`` as a numpy array of this dtype broadcast to this shape, or an error naming
        ``name`` (numpy's cast and broadcast errors name nothing)."""
        try:
            return np.broadcast_to(np.asarray(src).astype(self._dtype, copy=False), self._shape)
        except (TypeError, ValueError, OverflowError, RuntimeError) as e:  # RuntimeError: torch's .numpy() refusals
            raise argument_error("%s: cannot be written into a %s DeviceArray of shape %s (%s: %s)"
                                 % (name, self._dtype, self._shape, type(e).__name__, e)) from None

    def _memset(self, byte: int):
        self._writable()
        self._wait_writer()
        lib = _ffi.lib()
        check(lib.gatednorm_memset(ffi.cast("void *", self._ptr), int(byte), self.nbytes, ffi.NULL), "gatednorm_memset")
        if self._devtype not in HOST_TYPES:
            check(lib.gatednorm_stream_synchronize(ffi.NULL), "gatednorm_stream_synchronize")

    # ------------------------------------------------------------------ exports
    def __dlpack_device__(self) -> tuple:
        return (self._devtype, self._devid)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        if dl_device is not None and tuple(int(v) for v in dl_device) != (self._devtype, self._devid):
            raise BufferError("DeviceArray on %s cannot be exported to device %s" % (self.device, dl_device))
        if copy:
            raise BufferError("DeviceArray.__dlpack__: copy=True is not supported")
        sync = self._sync
        ps = sync.stream
        if ps is not None and stream != -1 and self._devtype not in HOST_TYPES:
            # DLPack: stream=None means the consumer uses the legacy default stream (CUDA)
            # or the default stream (ROCm): our stream 0.  If the consumer reads on another
            # stream than the last write, wait for that write on the host (the C ABI has no
            # events); the library's streams are non-blocking, so even the default stream
            # does not wait for them.
            if (0 if stream is None else _consumer_stream(stream, self._devtype)) != ps:
                _runtime.synchronize(ps)
                sync.stream = None
        versioned = max_version is not None and int(max_version[0]) >= 1
        from . import _dlpack  # its cffi cdef loads at the first export, not at import

        if sync.readonly and not versioned:
            # an unversioned (DLPack 0.x) tensor has no read-only flag: its consumer would write
            raise BufferError("DeviceArray over read-only memory: export it with max_version >= (1, 0), "
                              "whose tensors carry the read-only flag")
        return _dlpack.export(self, self._ptr, self._devtype, self._devid, self._shape, self._estrides,
                              self._dl[0], self._dl[1], versioned, sync.readonly)

    @property
    def __cuda_array_interface__(self) -> dict:
        if self._devtype in (CPU,):
            raise AttributeError("__cuda_array_interface__: this DeviceArray is in host memory (device 'cpu'); "
                                 "use __dlpack__ or numpy()")
        typestr = self._dtype.str
        if typestr not in _EXACT_TYPESTRS:
            if np.dtype(typestr) != self._dtype:
                # bf16 ('<V2'), fp8 ('|V1'): a typestr would say "raw bytes", and a consumer
                # would read them as such.  No interface: consumers fall back to DLPack.
                raise AttributeError("__cuda_array_interface__: dtype %s has no exact typestr; use __dlpack__"
                                     % self._dtype.name)
            _EXACT_TYPESTRS.add(typestr)
        stream = self._sync.stream
        return {
            "shape": self._shape,
            "typestr": typestr,
            "descr": [("", typestr)],
            "data": (self._ptr, bool(self._sync.readonly)),
            "strides": None if self.is_contiguous else self.strides,
            "version": 3,
            # the stream of the last pending library write (1: the legacy default stream);
            # None: nothing to wait for
            "stream": None if stream is None else (stream or 1),
        }


def _rebuild(host, device_type, device_id) -> DeviceArray:
    """A pickled DeviceArray: a new one on (device_type, device_id) holding ``host``."""
    return DeviceArray.from_numpy(host, device=(device_type, device_id))


#: typestrs that np.dtype() maps back to the same dtype (checked once per typestr)
_EXACT_TYPESTRS: set = set()


def _consumer_stream(stream, devtype) -> int:
    s = int(stream)
    if devtype != _runtime.ROCM and s == 1:  # CUDA legacy default stream
        return 0
    return s


def _is_readonly(owner) -> bool:
    """Whether ``owner`` is memory that refuses writes: numpy's writeable flag, a read-only
    buffer (bytes, a read-only memoryview or mmap, any buffer-protocol object exporting
    read-only), or an array interface marking its data read-only.  (Before: only numpy,
    memoryview and bytes were asked, so a view over a read-only mmap was writable and a
    write through it crashed the process: review.)"""
    if isinstance(owner, np.ndarray):
        return not owner.flags.writeable
    if isinstance(owner, bytes):
        return True
    if isinstance(owner, memoryview):
        return owner.readonly
    try:
        with memoryview(owner) as mv:
            return mv.readonly
    except (TypeError, BufferError, ValueError):
        pass  # no buffer protocol (or no export now): its array interfaces, if any
    for attr in ("__array_interface__", "__cuda_array_interface__"):
        try:
            data = getattr(owner, attr).get("data")
        except Exception:  # absent, or not a dict
            continue
        if isinstance(data, (tuple, list)) and len(data) > 1 and data[1]:
            return True
    return False


class _OwnerAndPointer:
    """A from_pointer view's base when both ``owner`` and a pointer object are given: both
    kept alive (the pointer object may hold memory of its own; before, only the owner was
    kept, against the docstring: review)."""

    __slots__ = ("owner", "ptr")

    def __init__(self, owner, ptr):
        self.owner, self.ptr = owner, ptr


def from_pointer(ptr, shape, dtype, strides=None, device=None, owner=None) -> DeviceArray:
    """A non-owning DeviceArray over memory at address ``ptr``.

    ``ptr``: an int, or anything int() accepts (hip-python ``Pointer``, ...); the object is
    kept alive by the view, as ``owner`` is (over a read-only owner the view is read-only).
    ``strides`` are in ELEMENTS (None: C-contiguous).  ``device``: as for DeviceArray, or
    None to ask the library where ``ptr`` lives (a NULL pointer is
    taken as CPU, and the ops will then reject it by name).  With a DeviceArray ``owner``,
    the view shares that array's stream ordering: library writes through either are waited
    for before the other is read on another stream or copied to the host.
    """
    if type(ptr) is int:
        addr = ptr
    elif not _runtime.integer_like(ptr):
        # int() would take them (3.9 -> 3, "4096" -> 4096, True -> 1, np.array(4096.7) -> 4096):
        # none is an address (reviews)
        raise argument_error("ptr: an address is an int (or an object with __int__, e.g. hip-python's Pointer); "
                             "got %s %r" % (type(ptr).__name__, ptr))
    else:
        try:
            addr = int(ptr)
        except (TypeError, ValueError):
            v = getattr(ptr, "value", None)  # ctypes.c_void_p
            if v is None and ptr is not None and not hasattr(ptr, "value"):
                raise argument_error("ptr: cannot get an address from %s" % type(ptr).__name__) from None
            addr = int(v or 0)
    if not 0 <= addr < (1 << 63):
        raise argument_error("ptr: address %d is outside [0, 2^63) (the C ABI takes addresses below 2^63)" % addr)
    shape = _norm_shape(shape)
    dt = _dtypes.dtype_arg(dtype, "dtype")
    if strides is None:
        estrides = _contiguous_strides(shape)  # (a zero-size shape's may not fit int64: named)
    else:
        estrides = _int_tuple(strides, "strides")
        if len(estrides) != len(shape):
            raise argument_error("strides: %d strides for %d dims" % (len(estrides), len(shape)))
    if device is None:
        devtype, devid = _runtime.pointer_device(addr) if addr else (CPU, 0)
    else:
        devtype, devid = _runtime.parse_device(device)
    # A view kept alive by a DeviceArray is (part of) that array's memory: share its
    # pending-write state, so that writes through either are waited for by both.  Over a
    # read-only buffer (a numpy array or memoryview that refuses writes) the view is read-only.
    if isinstance(owner, DeviceArray):
        sync = owner._sync
    else:
        sync = _Pending(readonly=_is_readonly(owner))
    if owner is None:
        base = ptr
    elif type(ptr) is int:
        base = owner
    else:
        base = _OwnerAndPointer(owner, ptr)
    return DeviceArray._view(addr, shape, estrides, dt, devtype, devid, base, sync)
