"""DLPack capsules: consuming (``__dlpack__`` of other libraries) and producing (DeviceArray).

A separate, small cffi cdef describes DLPack's structs (v1.x; DLManagedTensor and
DLManagedTensorVersioned).  Capsules are handled through ``ctypes.pythonapi`` (the Python C
API must be called with the GIL held, which cffi's ABI-mode calls would release).
"""

from __future__ import annotations

import atexit
import ctypes
import threading

import cffi

dlffi = cffi.FFI()
dlffi.cdef(
    """
    typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
    typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
    typedef struct {
        void *data;
        DLDevice device;
        int32_t ndim;
        DLDataType dtype;
        int64_t *shape;
        int64_t *strides;
        uint64_t byte_offset;
    } DLTensor;
    typedef struct DLManagedTensor {
        DLTensor dl_tensor;
        void *manager_ctx;
        void (*deleter)(struct DLManagedTensor *self);
    } DLManagedTensor;
    typedef struct { uint32_t major; uint32_t minor; } DLPackVersion;
    typedef struct DLManagedTensorVersioned {
        DLPackVersion version;
        void *manager_ctx;
        void (*deleter)(struct DLManagedTensorVersioned *self);
        uint64_t flags;
        DLTensor dl_tensor;
    } DLManagedTensorVersioned;
    """
)

DLPACK_MAJOR, DLPACK_MINOR = 1, 0
_DLT_PTR = dlffi.typeof("DLTensor *")
_VERSIONED_OFFSET = dlffi.offsetof("DLManagedTensorVersioned", "dl_tensor")
assert dlffi.offsetof("DLManagedTensor", "dl_tensor") == 0
#: DLTensor's data, device, ndim and dtype: laid out as gatednorm_tensor's first fields
HEAD_BYTES = dlffi.offsetof("DLTensor", "shape")
FLAG_READ_ONLY = 1 << 0
FLAG_IS_COPIED = 1 << 1

# Capsule names.  PyCapsule keeps a borrowed pointer to its name, so these buffers are kept
# alive for the life of the process (module globals that are never rebound).
_NAMES = {}
for _n in ("dltensor", "dltensor_versioned", "used_dltensor", "used_dltensor_versioned"):
    _NAMES[_n] = ctypes.create_string_buffer(_n.encode())
_N_LEGACY = _NAMES["dltensor"]
_N_VERSIONED = _NAMES["dltensor_versioned"]
_N_USED = _NAMES["used_dltensor"]
_N_USED_VERSIONED = _NAMES["used_dltensor_versioned"]

_api = ctypes.pythonapi
_c_int, _c_void_p, _py_object, _c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p
_PyCapsule_IsValid = ctypes.PYFUNCTYPE(_c_int, _py_object, _c_void_p)(("PyCapsule_IsValid", _api))
_PyCapsule_GetPointer = ctypes.PYFUNCTYPE(_c_void_p, _py_object, _c_void_p)(("PyCapsule_GetPointer", _api))
_PyCapsule_SetName = ctypes.PYFUNCTYPE(_c_int, _py_object, _c_void_p)(("PyCapsule_SetName", _api))
_PyCapsule_New = ctypes.PYFUNCTYPE(_py_object, _c_void_p, _c_void_p, _c_void_p)(("PyCapsule_New", _api))
# Variants taking the capsule as a raw address: used inside the capsule destructor, where the
# object is being deallocated and must not be INCREF'd.
_raw_IsValid = ctypes.PYFUNCTYPE(_c_int, _c_void_p, _c_void_p)(("PyCapsule_IsValid", _api))
_raw_GetPointer = ctypes.PYFUNCTYPE(_c_void_p, _c_void_p, _c_void_p)(("PyCapsule_GetPointer", _api))

_ADDR_LEGACY = ctypes.addressof(_N_LEGACY)
_ADDR_VERSIONED = ctypes.addressof(_N_VERSIONED)
_ADDR_USED = ctypes.addressof(_N_USED)
_ADDR_USED_VERSIONED = ctypes.addressof(_N_USED_VERSIONED)


# ============================================================================== consuming
class Imported:
    """A consumed DLPack capsule: ``t`` is a ``DLTensor *`` to its tensor, ``managed`` the
    DLManagedTensor(Versioned) *; call release() when done."""

    __slots__ = ("managed", "t", "versioned", "flags")

    def __init__(self, managed, t, versioned, flags):
        self.managed = managed
        self.t = t
        self.versioned = versioned
        self.flags = flags

    def release(self):
        m = self.managed
        if m is not None:
            self.managed = None
            d = m.deleter
            if d != dlffi.NULL:
                d(m)


def consume(capsule) -> Imported:
    """Take ownership of a ``dltensor``/``dltensor_versioned`` capsule (renaming it ``used_*``
    so its destructor no longer frees it).  Raises ValueError for anything else."""
    if _PyCapsule_IsValid(capsule, _ADDR_VERSIONED):
        p = _PyCapsule_GetPointer(capsule, _ADDR_VERSIONED)
        _PyCapsule_SetName(capsule, _ADDR_USED_VERSIONED)
        m = dlffi.cast("DLManagedTensorVersioned *", p)
        imp = Imported(m, dlffi.cast(_DLT_PTR, p + _VERSIONED_OFFSET), True, m.flags)
        if m.version.major != DLPACK_MAJOR:
            major = m.version.major
            imp.release()
            raise ValueError("DLPack major version %d is not supported (need %d)" % (major, DLPACK_MAJOR))
        return imp
    if _PyCapsule_IsValid(capsule, _ADDR_LEGACY):
        p = _PyCapsule_GetPointer(capsule, _ADDR_LEGACY)
        _PyCapsule_SetName(capsule, _ADDR_USED)
        return Imported(dlffi.cast("DLManagedTensor *", p), dlffi.cast(_DLT_PTR, p), False, 0)
    if type(capsule).__name__ == "PyCapsule":
        raise ValueError("__dlpack__ returned a capsule that is already consumed or not a DLPack tensor")
    raise ValueError("__dlpack__ returned %s, not a PyCapsule" % type(capsule).__name__)


# ============================================================================== producing
# address of the managed struct -> keep-alive tuple (struct, shape, strides, owner)
_exported: dict = {}
# Guards _exported.  Never hold it while a keep-alive tuple may be freed: dropping the owner
# can free another exported tensor (an owner that is itself a view of a consumed export),
# whose deleter or capsule destructor then takes this lock again on the same thread.
# Re-entrant: a collection may run, inside it, a finalizer that exports (a review: a plain
# lock hung the thread).
_exported_lock = threading.RLock()


def _addr(p) -> int:
    return int(dlffi.cast("uintptr_t", p))


def _forget(addr: int) -> None:
    """Drop the keep-alive tuple of an exported tensor.  The tuple is popped under the lock
    and released after it (releasing it may re-enter _forget: see _exported_lock)."""
    with _exported_lock:
        item = _exported.pop(addr, None)
    del item  # the owner may go here, with the lock free


@dlffi.callback("void(DLManagedTensor *)")
def _deleter_legacy(p):  # called by the consumer when it is done with the tensor
    try:
        _forget(_addr(p))
    except Exception:  # pragma: no cover - never raise into C
        pass


@dlffi.callback("void(DLManagedTensorVersioned *)")
def _deleter_versioned(p):
    try:
        _forget(_addr(p))
    except Exception:  # pragma: no cover
        pass


@dlffi.callback("void(void *)")
def _capsule_destructor(cap):
    """PyCapsule destructor: frees the tensor only if no consumer took it (name unchanged)."""
    try:
        try:
            cap = _addr(cap)  # ctypes wants an int, not a cffi pointer
        except SystemError:
            # Dropped with an error pending (_hold keeps that from happening where it can):
            # CPython turned that error into this one at the first call, and it is lost; the
            # tensor is still freed.
            cap = _addr(cap)
        for name in (_ADDR_LEGACY, _ADDR_VERSIONED):
            if _raw_IsValid(cap, name):
                _forget(_raw_GetPointer(cap, name))
                return
    except Exception:  # pragma: no cover
        pass


_DESTRUCTOR_ADDR = _addr(_capsule_destructor)


def export(owner, data: int, device_type: int, device_id: int, shape, strides, code: int, bits: int,
           versioned: bool, read_only: bool = False):
    """A new DLPack capsule viewing memory kept alive by ``owner`` (strides in elements)."""
    ndim = len(shape)
    shp = dlffi.new("int64_t[]", list(shape) or [0])
    std = dlffi.new("int64_t[]", list(strides) or [0])
    if versioned:
        m = dlffi.new("DLManagedTensorVersioned *")
        m.version.major, m.version.minor = DLPACK_MAJOR, DLPACK_MINOR
        m.deleter = _deleter_versioned
        m.flags = FLAG_READ_ONLY if read_only else 0
        name = _ADDR_VERSIONED
    else:
        m = dlffi.new("DLManagedTensor *")
        m.deleter = _deleter_legacy
        name = _ADDR_LEGACY
    t = m.dl_tensor
    t.data = dlffi.cast("void *", data)
    t.device.device_type, t.device.device_id = device_type, device_id
    t.ndim = ndim
    t.dtype.code, t.dtype.bits, t.dtype.lanes = code, bits, 1
    t.shape = shp
    t.strides = std
    t.byte_offset = 0
    addr = _addr(m)
    with _exported_lock:
        _exported[addr] = (m, shp, std, owner)
    try:
        cap = _PyCapsule_New(addr, name, _DESTRUCTOR_ADDR)
    except BaseException:
        _forget(addr)
        raise
    _hold(cap)
    return cap


# The last _HOLD_LAST capsules handed out are kept here.  A consumer that refuses a capsule
# drops it with its own error pending (numpy's "Unsupported device" for a GPU tensor), and
# a destructor written in Python cannot run then: CPython turns the pending error into a
# SystemError at the destructor's first call, the consumer returns NULL without an
# exception, and the tensor leaked (found on the GPU host).  Held, a capsule's last
# reference goes _HOLD_LAST exports later (on any thread), where no error is pending: a
# consumer refuses right after asking, so other threads would need that many exports in
# between to drop it early.  A consumed capsule (renamed) has nothing left to free; an
# unconsumed one keeps its memory until then.  Not thread-local: a thread's storage is torn
# down where a destructor that exports again would leak (review).
_HOLD_LAST = 8
_held: list = []
_held_lock = threading.RLock()  # re-entrant: a collection inside may run a finalizer that exports
_holding = True  # cleared at exit: capsules made during the teardown are not held


def _hold(cap, keep: int = _HOLD_LAST) -> None:
    """Holds ``cap`` (None: nothing) and drops all but the last ``keep`` held.  A drop may run
    a destructor that frees an owner whose finalizer exports again: that export is held
    after this one (the newest), so the capsule being returned loses its hold only if such
    finalizers export ``keep`` times or more (it stays alive: only the hold is lost)."""
    dropped = []
    with _held_lock:
        if cap is not None and _holding:
            _held.append(cap)
        while len(_held) > keep:  # (no object made here: no collection can run a finalizer midway)
            dropped.append(_held.pop(0))
    del dropped  # destructors run here, outside the lock


def _drop_held() -> None:
    """Drops every held capsule, and those exported meanwhile by destructors' finalizers
    (bounded: a chain of finalizers exporting forever is not waited for)."""
    for _ in range(100):
        if not _held:
            return
        _hold(None, 0)


def _drop_at_exit() -> None:
    # Before the interpreter's teardown, which a Python destructor cannot run in.
    global _holding
    _holding = False
    _drop_held()


atexit.register(_drop_at_exit)


def live_exports() -> int:
    """Number of exported tensors not yet released (for tests); the held capsules are
    dropped first, so a capsule no one else holds counts as released."""
    _drop_held()
    return len(_exported)
