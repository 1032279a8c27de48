"""Array adapters on the CPU (numpy, DLPack import/export, CUDA Array Interface dicts over
host memory, raw pointers, hip-python types) and, when installed and a GPU is present,
torch / CuPy / JAX."""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import io
import os
import subprocess
import sys
import textwrap
import threading
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest

import gatednorm
from gatednorm import DeviceArray, GatedNormError, _adapters, _dlpack, _dtypes, _ffi, _runtime, from_pointer, reference
from gatednorm._runtime import stream_handle

NAN = float("nan")
SHAPE = (6, 3, 40)


@pytest.fixture
def xzw(rng):
    x = rng.standard_normal(SHAPE).astype(np.float32)
    z = rng.standard_normal(SHAPE).astype(np.float32)
    w = (rng.standard_normal(SHAPE[-1]) * 0.5 + 1).astype(np.float32)
    return x, z, w


def check_result(out, x, z, w, **kw):
    got = out if isinstance(out, np.ndarray) else out.numpy()
    assert not np.isnan(got.astype(np.float32)).any()
    cmp = reference.compare(got, reference.rmsnorm_gated(x, z, w, **kw), got.dtype)
    assert cmp.ok, cmp


# ================================================================================ numpy
@pytest.mark.parametrize("dt", ["bf16", "fp16", "fp32"])
def test_numpy_dtypes(rng, dt):
    d = _dtypes.to_numpy_dtype(dt)
    x = rng.standard_normal(SHAPE).astype(d)
    z = rng.standard_normal(SHAPE).astype(d)
    w = np.ones(SHAPE[-1], d)
    out = np.full(SHAPE, NAN, d)
    assert gatednorm.rmsnorm_gated(x, z, w, out=out) is out
    check_result(out, x, z, w)


def test_numpy_subclass_and_array_interface_object(xzw):
    x, z, w = xzw

    class Sub(np.ndarray):
        pass

    class HostIface:  # only __array_interface__
        def __init__(self, a):
            self.a = a
            self.__array_interface__ = a.__array_interface__

    out = np.full(SHAPE, NAN, np.float32)
    gatednorm.rmsnorm_gated(x.view(Sub), HostIface(z), w, out=HostIface(out))
    check_result(out, x, z, w)


# ================================================================================ DLPack import
# Several tests use numpy itself as the DLPack producer or consumer beside the library; DLPack
# 1.0 (max_version, read-only export, from_dlpack's keywords) came to numpy in 2.1.  The
# library takes older producers (the legacy retry) and numpy arrays through the buffer protocol.
NUMPY_DLPACK_1 = np.lib.NumpyVersion(np.__version__) >= "2.1.0"
needs_numpy_dlpack_1 = pytest.mark.skipif(not NUMPY_DLPACK_1, reason="numpy < 2.1: no DLPack 1.0 producer / consumer to test with")


class DLPackOnly:
    """Exposes nothing but __dlpack__ / __dlpack_device__ of the wrapped array, recording
    how it was called.  legacy=True: a pre-1.0 producer (no max_version keyword)."""

    def __init__(self, a, legacy=False):
        self.a, self.legacy, self.calls = a, legacy, []

    def __dlpack__(self, *args, **kw):
        self.calls.append(kw)
        if self.legacy and "max_version" in kw:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
        return self.a.__dlpack__(*args, **kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


@pytest.mark.parametrize("legacy", [False, True])
def test_dlpack_import_numpy(xzw, legacy):
    if not legacy and not NUMPY_DLPACK_1:
        pytest.skip("numpy < 2.1 is a legacy DLPack producer (no max_version)")
    x, z, w = xzw
    out = np.full(SHAPE, NAN, np.float32)
    args = [DLPackOnly(a, legacy) for a in (x, z, w, out)]
    refcounts = [sys.getrefcount(a) for a in (x, z, w, out)]
    assert gatednorm.rmsnorm_gated(*args[:3], out=args[3]) is args[3]
    check_result(out, x, z, w)
    for p in args:
        assert p.calls[0] == {"stream": None, "max_version": (1, 0)}  # host device: no stream
        if legacy:
            assert p.calls[1] == {} and len(p.calls) == 2
        else:
            assert len(p.calls) == 1
    gc.collect()
    # every consumed capsule was released (numpy's deleter drops its reference)
    assert [sys.getrefcount(a) for a in (x, z, w, out)] == refcounts


@pytest.mark.parametrize("dt", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("legacy", [False, True])
def test_dlpack_import_devicearray(rng, dt, legacy):
    d = _dtypes.to_numpy_dtype(dt)
    x = rng.standard_normal(SHAPE).astype(d)
    z = rng.standard_normal(SHAPE).astype(d)
    w = np.ones(SHAPE[-1], d)
    live = _dlpack.live_exports()
    dev = [DeviceArray.from_numpy(a, device="cpu") for a in (x, z, w, np.full(SHAPE, NAN, d))]
    out = dev[3]
    gatednorm.rmsnorm_gated(*(DLPackOnly(a, legacy) for a in dev[:3]), out=DLPackOnly(out, legacy))
    check_result(out, x, z, w)
    assert _dlpack.live_exports() == live  # the deleters ran


def test_dlpack_strided_view(rng):
    x = rng.standard_normal((5, 2, 64)).astype(np.float32)
    xb = DeviceArray.from_numpy(np.concatenate([x, x], axis=-1), device="cpu")
    xv = xb[:, :, 64:]  # head stride 128 elements
    w = np.ones(64, np.float32)
    y = gatednorm.rmsnorm_gated(DLPackOnly(xv), None, w, out=np.full(x.shape, NAN, np.float32))
    check_result(y, x, None, w)


def test_dlpack_read_only_out(xzw):
    x, z, w = xzw
    ro = np.full(SHAPE, NAN, np.float32)
    ro.flags.writeable = False
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, z, w, out=DLPackOnly(ro))
    assert ei.value.message.startswith("out:")
    assert np.isnan(ro).all()


@needs_numpy_dlpack_1
def test_dlpack_read_only_input_is_fine(xzw):
    x, z, w = xzw
    xr = x.copy()
    xr.flags.writeable = False
    check_result(gatednorm.rmsnorm_gated(DLPackOnly(xr), z, w), x, z, w)


class FakeGPUProducer:
    """Says it lives on a GPU; records the stream it is asked for, then refuses."""

    def __init__(self, device=(2, 0)):
        self.device, self.streams = device, []

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, *, stream=None, max_version=None, **kw):
        self.streams.append(stream)
        raise BufferError("fake producer")


@pytest.mark.parametrize("device,stream,expected", [
    ((2, 0), None, 1),        # CUDA: default stream is passed as 1 (legacy), never 0
    ((2, 0), 0, 1),
    ((2, 0), 12345, 12345),
    ((13, 0), None, 1),       # CUDA managed: same rules
    ((10, 0), None, 0),       # ROCm: 0 is the default stream
    ((10, 0), 777, 777),
])
def test_dlpack_stream_argument(xzw, device, stream, expected):
    _, _, w = xzw
    p = FakeGPUProducer(device)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(p, None, w, stream=stream)
    assert p.streams == [expected]
    assert ei.value.message.startswith("x:") and "fake producer" in ei.value.message


def test_dlpack_consumed_capsule_is_rejected(xzw):
    x, z, w = xzw
    cap = x.__dlpack__()

    class Same:
        def __dlpack__(self, **kw):
            return cap

        def __dlpack_device__(self):
            return (1, 0)

    gatednorm.rmsnorm_gated(Same(), None, w)  # first use consumes it
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(Same(), None, w)
    assert ei.value.message.startswith("x:")


def test_dlpack_preferred_over_cai(xzw):
    x, z, w = xzw

    class Both(DLPackOnly):
        @property
        def __cuda_array_interface__(self):
            raise AssertionError("CAI must not be used when DLPack is available")

    p = Both(x)
    check_result(gatednorm.rmsnorm_gated(p, z, w, stream=0), x, z, w)
    assert p.calls


# ================================================================================ DeviceArray export
@pytest.mark.parametrize("dt", [np.float16, np.float32, np.uint8, np.int32])
def test_devicearray_to_numpy_from_dlpack(rng, dt):
    a = (rng.standard_normal((4, 5, 6)) * 10).astype(dt)
    da = DeviceArray.from_numpy(a, device="cpu")
    b = np.from_dlpack(da)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(b, a)
    # a view of the same memory, not a copy
    assert b.__array_interface__["data"][0] == da.data_ptr
    # strided views
    v = da[1:, ::2, 1::3]
    assert np.array_equal(np.from_dlpack(v), a[1:, ::2, 1::3])
    assert np.array_equal(np.from_dlpack(da[:, -1]), a[:, -1])


@pytest.mark.parametrize("dt", ["bf16", "fp16", "fp32", "float8_e4m3fn", "float8_e4m3fnuz", "e8m0", "uint8", "int32"])
@pytest.mark.parametrize("versioned", [False, True])
def test_devicearray_capsule_contents(rng, dt, versioned):
    d = _dtypes.to_numpy_dtype(dt)
    a = rng.standard_normal((3, 8)).astype(np.float32).astype(d)
    da = DeviceArray.from_numpy(a, device="cpu")[:, 2:7]
    live = _dlpack.live_exports()
    cap = da.__dlpack__(max_version=(1, 0) if versioned else None)
    imp = _dlpack.consume(cap)
    try:
        t = imp.t
        assert imp.versioned == versioned
        assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (*_dtypes.NP_TO_DL[d], 1)
        assert (t.device.device_type, t.device.device_id) == (1, 0)
        assert t.ndim == 2 and list(t.shape[0:2]) == [3, 5] and list(t.strides[0:2]) == [8, 1]
        assert int(_dlpack.dlffi.cast("uintptr_t", t.data)) + t.byte_offset == da.data_ptr
        if versioned:
            assert imp.flags & _dlpack.FLAG_READ_ONLY == 0
            assert (imp.managed.version.major, imp.managed.version.minor) == (1, 0)
    finally:
        imp.release()
    assert _dlpack.live_exports() == live
    del cap


def test_devicearray_capsule_lifetime():
    live = _dlpack.live_exports()
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    da = DeviceArray.from_numpy(a, device="cpu")
    caps = [da.__dlpack__(), da.__dlpack__(max_version=(1, 0)), da.__dlpack__(max_version=(0, 8))]
    assert [str(c).split('"')[1] for c in caps] == ["dltensor", "dltensor_versioned", "dltensor"]
    assert len(_dlpack._exported) == live + 3
    del caps  # never consumed: held (the last eight exports are), then freed by the capsule
    gc.collect()  # destructor once dropped (live_exports drops them)
    assert len(_dlpack._exported) == live + 3
    assert _dlpack.live_exports() == live
    # consumed: the consumer's array keeps the memory alive after the DeviceArray is gone
    b = np.from_dlpack(da)
    ref = weakref.ref(da._base)
    del da
    gc.collect()
    assert ref() is not None and np.array_equal(b, a)
    del b
    gc.collect()
    assert ref() is None and _dlpack.live_exports() == live


def test_refused_capsule_keeps_the_consumers_error():
    """A consumer that refuses our capsule drops it with its error pending (numpy: a GPU
    tensor).  The user must get that error, not a SystemError, and the export must be freed
    (the capsule destructor, written in Python, lost the error and leaked the tensor: found on
    the GPU host, where np.from_dlpack of a GPU DeviceArray said "returned NULL without setting
    an exception").  The tensor is labelled CUDA over host memory numpy never reads."""
    buf = np.zeros(16, np.float32)

    class GpuLabelled:
        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
            return _dlpack.export(buf, buf.ctypes.data, 2, 0, (16,), (1,), 2, 32, max_version is not None)

    live = _dlpack.live_exports()
    with pytest.raises(Exception) as e:
        np.from_dlpack(GpuLabelled())
    assert not isinstance(e.value, SystemError) and "device" in str(e.value).lower(), repr(e.value)
    assert _dlpack.live_exports() == live

    # another thread exporting between the export and the refusal must not drop the hold
    # (a review's case: one capsule held for the whole process)
    class OtherThreadExports(GpuLabelled):
        def __dlpack__(self, **kw):
            cap = super().__dlpack__(**kw)
            t = threading.Thread(target=lambda: DeviceArray.from_numpy(buf, device="cpu").__dlpack__())
            t.start()
            t.join()
            return cap

    with pytest.raises(Exception) as e:
        np.from_dlpack(OtherThreadExports())
    assert not isinstance(e.value, SystemError) and "device" in str(e.value).lower(), repr(e.value)
    assert _dlpack.live_exports() == live


@needs_numpy_dlpack_1
def test_devicearray_export_chain_release_does_not_deadlock():
    """Dropping the last consumer of an export whose owner is a view kept alive by another
    consumed export: the first deleter frees the owner, which runs the second deleter from
    inside the first.  Both must not take a non-reentrant lock held around the free."""
    script = textwrap.dedent("""
        import numpy as np
        from gatednorm import DeviceArray, _dlpack, from_pointer
        live = _dlpack.live_exports()
        da = DeviceArray.from_numpy(np.arange(4, dtype=np.float32), device="cpu")
        n = np.from_dlpack(da)                                         # export 1, owner da
        v = from_pointer(n.ctypes.data, n.shape, n.dtype, owner=n)     # a view kept alive by n
        del n, da
        m = np.from_dlpack(v)                                          # export 2, owner v
        del v
        del m            # deleter 2 -> frees v -> frees n -> deleter 1, nested
        db = DeviceArray.from_numpy(np.arange(2, dtype=np.float32), device="cpu")
        n2 = np.from_dlpack(db)                                        # export 3, owner db
        w = from_pointer(n2.ctypes.data, n2.shape, n2.dtype, owner=n2)
        del n2, db
        c = w.__dlpack__()                                             # export 4, never consumed
        del w
        del c            # capsule destructor 4 -> frees w -> frees n2 -> deleter 3, nested
        assert _dlpack.live_exports() == live, (_dlpack.live_exports(), live)
        print("released")
    """)
    r = _run_exports_script(script, "releasing a chain of DLPack exports deadlocked")
    assert r.returncode == 0 and "released" in r.stdout, r.stdout + r.stderr


def _run_exports_script(script, hang_message):
    """Runs ``script`` in a fresh interpreter on this library (exit and teardown included);
    a run past 60 s fails the test with ``hang_message``."""
    env = dict(os.environ, GATEDNORM_LIBRARY=_ffi.library_path(),
               PYTHONPATH=os.pathsep.join([str(Path(gatednorm.__file__).resolve().parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    try:
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(hang_message)


def test_held_capsules_released_across_threads_and_exit():
    """Held capsules (_dlpack._hold) whose owners' finalizers export again, exported from
    threads that end and from an atexit handler that runs after gatednorm's: nothing leaks,
    and the process exits cleanly (a review: thread-local holds leaked such an export for
    good, and a capsule left held into the interpreter's teardown crashed it)."""
    script = textwrap.dedent("""
        import atexit, threading, numpy as np
        buf = np.zeros(4, np.float32)
        def late():  # registered first, so it runs after gatednorm's exit handler
            from gatednorm import _dlpack
            _dlpack.export(None, buf.ctypes.data, 1, 0, (4,), (1,), 2, 32, False)
            print("late export", flush=True)
        atexit.register(late)
        from gatednorm import _dlpack
        class Owner:
            def __init__(self, depth):
                self.depth = depth
            def __del__(self):
                if self.depth:
                    _dlpack.export(Owner(self.depth - 1), buf.ctypes.data, 1, 0, (4,), (1,), 2, 32, False)
        live = _dlpack.live_exports()
        def worker():
            for _ in range(3):
                _dlpack.export(Owner(2), buf.ctypes.data, 1, 0, (4,), (1,), 2, 32, False)
        for _ in range(20):
            t = threading.Thread(target=worker)
            t.start()
            t.join()
        assert _dlpack.live_exports() == live, (_dlpack.live_exports(), live)
        import gc  # a collection inside the locks, whose finalizer exports (a review: it hung)
        class Cycle:
            def __init__(self):
                self.me = self
            def __del__(self):
                _dlpack.export(None, buf.ctypes.data, 1, 0, (4,), (1,), 2, 32, False)
        class Pad:
            pass
        keep = []
        for threshold in range(1, 40):  # some collection falls inside a lock
            gc.set_threshold(threshold)
            for k in range(60):
                gc.collect()
                Cycle()
                keep.extend(Pad() for _ in range(k))
                _dlpack.export(None, buf.ctypes.data, 1, 0, (4,), (1,), 2, 32, False)
        gc.set_threshold(700)
        del keep
        _dlpack.export(Owner(2), buf.ctypes.data, 1, 0, (4,), (1,), 2, 32, False)  # held at exit
        print("released", flush=True)
    """)
    r = _run_exports_script(script, "an export from a finalizer run by a collection deadlocked")
    assert r.returncode == 0 and "released" in r.stdout and "late export" in r.stdout, (r.returncode, r.stdout + r.stderr)


@needs_numpy_dlpack_1
def test_devicearray_dlpack_options():
    da = DeviceArray.from_numpy(np.zeros(4, np.float32), device="cpu")
    assert da.__dlpack_device__() == (1, 0)
    with pytest.raises(BufferError):
        da.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError):
        da.__dlpack__(copy=True)
    assert np.from_dlpack(da, device="cpu").shape == (4,)


def test_devicearray_cpu_has_no_cuda_array_interface():
    da = DeviceArray.from_numpy(np.zeros(4, np.float32), device="cpu")
    assert not hasattr(da, "__cuda_array_interface__")
    with pytest.raises(AttributeError):
        da.__cuda_array_interface__


@pytest.mark.parametrize("dt", ["bf16", "float8_e4m3fn", "float8_e4m3fnuz", "e8m0", "fp16", "fp32", "int32"])
def test_devicearray_cuda_array_interface_only_for_exact_typestrs(dt):
    """bf16 / fp8 have no typestr of their own ('<V2' / '|V1' would be read as raw bytes):
    no __cuda_array_interface__ then, so that consumers fall back to DLPack."""
    d = _dtypes.to_numpy_dtype(dt)
    da = fake_gpu(DeviceArray.from_numpy(np.zeros((2, 3), d), device="cpu"))
    if d.kind == "V":
        assert not hasattr(da, "__cuda_array_interface__")
        with pytest.raises(AttributeError, match="DLPack|__dlpack__"):
            da.__cuda_array_interface__
        cap = da.__dlpack__()  # DLPack still works
        del cap
    else:
        cai = da.__cuda_array_interface__
        assert np.dtype(cai["typestr"]) == d and cai["shape"] == (2, 3) and cai["stream"] is None
        da._stream = 0x1230
        assert da[1:].__cuda_array_interface__["stream"] == 0x1230
        da._stream = 0
        assert da.__cuda_array_interface__["stream"] == 1  # the legacy default stream


def test_devicearray_gpu_cuda_array_interface(requires_gpu):
    a = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    da = DeviceArray.from_numpy(a, device="cuda:0")
    cai = da.__cuda_array_interface__
    assert cai["version"] == 3 and cai["shape"] == (2, 3, 4) and cai["typestr"] == "<f2"
    assert cai["data"] == (da.data_ptr, False) and cai["strides"] is None
    v = da[:, 1:, ::2]
    assert v.__cuda_array_interface__["strides"] == v.strides
    # a CAI consumer (ours) reads it back correctly

    class CAIOnly:
        def __init__(self, a):
            self.__cuda_array_interface__ = a.__cuda_array_interface__

    u = da[:, 1:]  # token stride 12 elements, last dim contiguous
    assert u.__cuda_array_interface__["strides"] == (24, 8, 2)
    y = gatednorm.rmsnorm_gated(CAIOnly(u), None, DeviceArray.from_numpy(np.ones(4, np.float16), device="cuda:0"))
    assert isinstance(y, DeviceArray) and y.device == "cuda:0"
    check_result(y, a[:, 1:], None, np.ones(4, np.float16))
    # bf16: no exact typestr, so no CAI (consumers use DLPack)
    assert not hasattr(DeviceArray((2, 4), "bf16", device="cuda:0"), "__cuda_array_interface__")


# ================================================================================ DeviceArray API
@pytest.mark.parametrize("dt", ["bf16", "fp16", "fp32", "float8_e4m3fn", "uint8", "int32"])
def test_devicearray_roundtrip(rng, dt):
    d = _dtypes.to_numpy_dtype(dt)
    a = rng.standard_normal((7, 3, 5)).astype(np.float32).astype(d)
    da = DeviceArray.from_numpy(a, device="cpu")
    assert da.shape == a.shape and da.dtype == d and da.ndim == 3 and da.size == a.size
    assert da.strides == a.strides and da.element_strides == (15, 5, 1) and da.nbytes == a.nbytes
    assert da.device == "cpu" and (da.device_type, da.device_id) == (1, 0) and len(da) == 7
    assert da.numpy().tobytes() == a.tobytes()
    assert np.asarray(da).tobytes() == a.tobytes()


def test_devicearray_views_and_writes(rng):
    a = rng.standard_normal((6, 4, 10)).astype(np.float32)
    da = DeviceArray.from_numpy(a, device="cpu")
    for key in [(slice(1, 5),), (2,), (slice(None), 1, slice(2, 9, 3)), (Ellipsis, 3),
                (slice(None, None, -2), slice(None), slice(-4, None)), (-1, Ellipsis)]:
        assert np.array_equal(da[key].numpy(), a[key]), key
    v = da[:, 1:3, ::2]
    v.fill_(7.0)
    a[:, 1:3, ::2] = 7.0
    assert np.array_equal(da.numpy(), a)  # only the view's elements changed
    src = rng.standard_normal(v.shape).astype(np.float32)
    v.copy_(src)
    a[:, 1:3, ::2] = src
    assert np.array_equal(da.numpy(), a)
    assert np.array_equal(DeviceArray.zeros((3, 2), "bf16", device="cpu").numpy().astype(np.float32), np.zeros((3, 2)))
    assert np.array_equal(da.reshape(-1, 10).numpy(), a.reshape(-1, 10))
    with pytest.raises(IndexError):
        da[6]


def test_devicearray_refusals_name_what_was_given():
    """A review (2026-12-07): reshape of a strided view named view()'s `element_strides`,
    from_numpy of an array without a DLPack dtype named a `dtype` it does not take, an array
    index beside an ellipsis raised numpy's "truth value is ambiguous" and two ellipses were
    read as one.  A byte-swapped array is copied by value, in native order."""
    da = DeviceArray.from_numpy(np.arange(10, dtype=np.float32), device="cpu")
    with pytest.raises(GatedNormError) as ei:
        da[::2].reshape(5, 1)
    assert ei.value.message.startswith("self: reshape takes a contiguous array")
    with pytest.raises(GatedNormError) as ei:
        DeviceArray.from_numpy(np.array(["a"]), device="cpu")
    assert ei.value.message.startswith("arr: numpy dtype <U1")
    with pytest.raises(IndexError, match="only integers, slices and"):
        da[np.array([0, 1]), ...]
    with pytest.raises(IndexError, match="single ellipsis"):
        da[..., ...]
    swapped = DeviceArray.from_numpy(np.arange(4, dtype=">f4"), device="cpu")
    assert swapped.dtype == np.float32 and swapped.numpy().tolist() == [0.0, 1.0, 2.0, 3.0]


def test_devicearray_memory_is_freed_with_last_view():
    da = DeviceArray((1000,), np.float32, device="cpu")
    ref = weakref.ref(da._base)
    v = da[10:20]
    del da
    gc.collect()
    assert ref() is not None  # the view keeps the allocation
    del v
    gc.collect()
    assert ref() is None


def test_devicearray_device_parsing():
    assert DeviceArray((2,), "fp32", device=(1, 0)).device == "cpu"
    assert DeviceArray((2,), "fp32", device="CPU").device == "cpu"
    if gatednorm.device_count() == 0:
        assert DeviceArray((2,), "fp32").device == "cpu"  # default: GPU 0 if any, else CPU
        for dev in ("cuda:0", 0, "gpu"):
            with pytest.raises(GatedNormError):
                DeviceArray((2,), "fp32", device=dev)
    with pytest.raises(GatedNormError) as ei:
        DeviceArray((2,), "fp32", device="tpu:0")
    assert ei.value.message.startswith("device:")


# ================================================================================ CUDA Array Interface
class CAIDict:
    """An object carrying a CUDA Array Interface v3 dict (instance attribute, as hip-python
    does) over host memory."""

    def __init__(self, a, **override):
        d = {"shape": a.shape, "typestr": a.dtype.str, "data": (a.__array_interface__["data"][0], False),
             "strides": None if a.flags.c_contiguous else a.strides, "version": 3, "stream": None}
        d.update(override)
        self.__cuda_array_interface__ = d
        self.keep = a


class CAIProperty:
    def __init__(self, a):
        self.a = a

    @property
    def __cuda_array_interface__(self):
        a = self.a
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
                "strides": a.strides, "version": 3}


@pytest.mark.parametrize("cls", [CAIDict, CAIProperty])
@pytest.mark.parametrize("dt", [np.float16, np.float32])
def test_cai_host_memory(rng, cls, dt):
    x = rng.standard_normal(SHAPE).astype(dt)
    zb = rng.standard_normal((SHAPE[0], SHAPE[1], 2 * SHAPE[2])).astype(dt)
    z = zb[:, :, SHAPE[2]:]  # strided: explicit byte strides
    w = np.ones(SHAPE[-1], dt)
    out = np.full(SHAPE, NAN, dt)
    gatednorm.rmsnorm_gated(cls(x), cls(z), cls(w), out=cls(out))
    check_result(out, x, z, w)


def test_cai_list_shape(xzw):
    """CAI v3 allows any sequence for shape/strides (numba and others give lists)."""
    x, z, w = xzw
    zb = np.concatenate([z, z], axis=-1)[:, :, SHAPE[2]:]  # strided, strides as a list too
    out = np.full(SHAPE, NAN, np.float32)
    args = [CAIDict(x, shape=list(x.shape), strides=None), CAIDict(zb, shape=list(zb.shape), strides=list(zb.strides)),
            CAIDict(w, shape=[SHAPE[-1]], strides=None)]
    assert gatednorm.rmsnorm_gated(*args, out=CAIDict(out, shape=list(SHAPE), strides=None)) is not None
    check_result(out, x, zb, w)
    y = gatednorm.rmsnorm_gated(*args)  # out=None: allocated from x's (list) shape
    assert isinstance(y, DeviceArray) and y.shape == SHAPE
    check_result(y, x, zb, w)


def test_cai_errors(xzw):
    x, z, w = xzw
    cases = [
        ("x", dict(x=CAIDict(x.view(np.uint16).view("V2")))),          # '<V2': bf16? ambiguous
        ("x", dict(x=CAIDict(x, mask=object()))),
        ("x", dict(x=CAIDict(x, strides=(3, 7, 1)))),                   # bytes not a multiple of 4
        ("out", dict(out=CAIDict(np.full(SHAPE, NAN, np.float32), data=(x.ctypes.data, True)))),
        ("z", dict(z=CAIDict(z, typestr="not-a-type"))),
        ("weight", dict(weight=CAIDict(w, data=None))),
    ]
    for name, over in cases:
        a = dict(x=x, z=z, weight=w, out=None)
        a.update(over)
        with pytest.raises(GatedNormError) as ei:
            gatednorm.rmsnorm_gated(a["x"], a["z"], a["weight"], out=a["out"])
        assert ei.value.message.startswith(name + ":"), ei.value.message


def test_cai_null_pointer(xzw):
    x, z, w = xzw
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(CAIDict(x, data=(0, False)), z, w)
    assert ei.value.message.startswith("x:")


def test_cai_stream_resolution(xzw):
    x, _, _ = xzw
    for cai_stream, expected in [(None, 0), (1, 0), (2, 2), (0xABC0, 0xABC0)]:
        obj = CAIDict(x, stream=cai_stream)
        kind = _adapters.kind_of(obj)
        assert kind == _adapters.CAI
        s, cai = _adapters.resolve_stream(None, obj, kind)
        assert s == expected and cai is obj.__cuda_array_interface__
        # an explicit stream wins
        assert _adapters.resolve_stream(0x5550, obj, kind)[0] == 0x5550
    assert _adapters.resolve_stream(None, x, _adapters.kind_of(x)) == (0, None)


@pytest.mark.parametrize("bad", ["abc", object(), -5, 2 ** 70, 1.5, True])
def test_cai_stream_entry_is_checked_and_named(xzw, bad):
    """A producer's CAI 'stream' took int() outside any check: 'abc' raised a plain
    ValueError, -5 / 2**70 / 1.5 were launched on; now refused as an explicit stream= is,
    naming the array."""
    x, z, w = xzw
    out = np.full(SHAPE, NAN, np.float32)
    with pytest.raises(gatednorm.InvalidArgumentError) as ei:
        gatednorm.rmsnorm_gated(CAIDict(x, stream=bad), z, w, out=out)
    assert ei.value.message.startswith("x:") and "stream" in ei.value.message, ei.value.message
    assert np.isnan(out).all()


class CountingCAI(CAIProperty):
    reads = 0

    @property
    def __cuda_array_interface__(self):
        CountingCAI.reads += 1
        return CAIProperty.__cuda_array_interface__.fget(self)


class CountingDLPack(DLPackOnly):
    reads = 0

    def __dlpack__(self, *args, **kw):
        CountingDLPack.reads += 1
        return super().__dlpack__(*args, **kw)


@pytest.mark.parametrize("cls", [CountingCAI, CountingDLPack])
def test_arrays_read_once_by_the_call_and_once_to_allocate(rng, cls):
    """Each array is read once by the call layer (a CAI x was read twice: once for its stream);
    a wrapper that makes outputs reads x once more for all of them (it read x once per output:
    rmsnorm with fp8 5 times)."""
    if cls is CountingDLPack and not NUMPY_DLPACK_1:
        pytest.skip("numpy < 2.1 refuses max_version: the legacy retry reads the array twice")
    x = rng.standard_normal((4, 256)).astype(np.float32)
    w = np.ones(256, np.float32)
    z = rng.standard_normal((4, 256)).astype(np.float32)
    cls.reads = 0
    out = np.full((4, 256), NAN, np.float32)
    gatednorm.rmsnorm_gated(cls(x), None, w, out=out)
    assert cls.reads == 1, cls.reads
    for call in (lambda a: gatednorm.rmsnorm(a, w, fp8=True), lambda a: gatednorm.group_quant_fp8(a),
                 lambda a: gatednorm.rmsnorm_gated_fp8(a, z, w, copy_dtype="float32"),
                 lambda a: gatednorm.add_rmsnorm(a, x.copy(), w, fp8=True)):
        cls.reads = 0
        call(cls(x))
        assert cls.reads == 2, cls.reads


def test_output_read_for_its_dtype_is_named(xzw):
    """out's dtype read through its adapter failed naming x."""
    x, z, w = xzw

    class BadDL:
        def __dlpack_device__(self):
            return (1, 0)

        def __dlpack__(self, **kw):
            raise RuntimeError("boom")

    for call, name in [(lambda: gatednorm.rmsnorm_gated(x, z, w, out=BadDL(), out_dtype=np.float32), "out"),
                       (lambda: gatednorm.rmsnorm(x, w, y_out=BadDL(), y_dtype=np.float32), "y_out"),
                       (lambda: gatednorm.rmsnorm_gated_fp8(x.reshape(6, 120)[:, :96], None, np.ones(96, np.float32),
                                                            group_size=32, y=BadDL(), copy_dtype=np.float32), "y")]:
        with pytest.raises(GatedNormError) as ei:
            call()
        assert ei.value.message.startswith(name + ":"), ei.value.message


def test_masked_arrays_are_refused_by_name(xzw):
    """A numpy masked array's mask was ignored (a CAI 'mask' is refused): both are refused."""
    x, z, w = xzw
    xm = np.ma.masked_array(x, mask=np.zeros(x.shape, bool))
    with pytest.raises(gatednorm.InvalidArgumentError, match="x: numpy masked arrays are not supported"):
        gatednorm.rmsnorm_gated(xm, z, w)
    out = np.ma.masked_array(np.full(SHAPE, NAN, np.float32), mask=True)
    with pytest.raises(gatednorm.InvalidArgumentError, match="out: numpy masked arrays"):
        gatednorm.rmsnorm_gated(x, z, w, out=out)


# ================================================================================ streams
def test_stream_handles():
    class TorchLike:
        cuda_stream = 0x1000

    class CupyLike:
        ptr = 0x2000

    class Protocol:
        def __cuda_stream__(self):
            return (0, 0x3000)

    class IntLike:
        def __int__(self):
            return 0x4000

    assert stream_handle(None) == 0
    assert stream_handle(0x10) == 0x10
    assert stream_handle(TorchLike()) == 0x1000
    assert stream_handle(CupyLike()) == 0x2000
    assert stream_handle(Protocol()) == 0x3000
    assert stream_handle(IntLike()) == 0x4000
    assert stream_handle(ctypes.c_void_p(0x5000)) == 0x5000
    with pytest.raises(GatedNormError):
        stream_handle("stream")


def test_gpu_library_stream(requires_gpu, rng):
    """A call on a library-created stream; numpy() waits for that stream's work."""
    T, H, D = 2048, 16, 128
    x = rng.standard_normal((T, H, D)).astype(np.float32)
    w = np.ones(D, np.float32)
    s = gatednorm.Stream(0)
    assert int(s) != 0
    xd, wd = DeviceArray.from_numpy(x, device=0), DeviceArray.from_numpy(w, device=0)
    out = DeviceArray((T, H, D), "bf16", device=0)
    out.fill_(NAN)
    assert gatednorm.rmsnorm_gated(xd, None, wd, out=out, stream=s) is out
    check_result(out.numpy(), x, None, w)
    out2 = DeviceArray((T, H, D), "bf16", device=0)
    gatednorm.rmsnorm_gated(xd, None, wd, out=out2, stream=s)
    s.synchronize()
    check_result(out2.numpy(), x, None, w)


def test_explicit_default_stream_on_cpu(xzw):
    x, z, w = xzw
    for s in (None, 0):
        check_result(gatednorm.rmsnorm_gated(x, z, w, stream=s), x, z, w)


# ------------------------------------------------------------- DeviceArray stream ordering
# The library's streams are non-blocking: a DeviceArray written by an op on stream s1 must
# be waited for before it is read on any other stream (an op input, an export, a host copy).
# On the CPU the waits are observed through a mocked _runtime.synchronize, on arrays in host
# memory labelled as CUDA memory (fake_gpu).
def fake_gpu(a: DeviceArray) -> DeviceArray:
    a._devtype = _runtime.CUDA
    a._t = None
    return a


@pytest.fixture
def syncs(monkeypatch):
    calls = []
    monkeypatch.setattr(_runtime, "synchronize", lambda s=None: calls.append(s))
    return calls


@pytest.mark.parametrize("pending, stream, waits", [
    (0x1111, None, True),     # None: the consumer uses the (legacy) default stream
    (0x1111, 1, True),        # 1: CUDA's legacy default stream
    (0x1111, 2, True),        # 2: the per-thread default stream
    (0x1111, 0x2222, True),
    (0x1111, 0x1111, False),  # the consumer reads on the writing stream: ordered already
    (0x1111, -1, False),      # -1: the consumer asks for no synchronization
    (0, None, False),         # written on the default stream, read on it
    (0, 1, False),
    (None, None, False),      # nothing pending
])
def test_devicearray_dlpack_waits_for_pending_write(syncs, pending, stream, waits):
    b = fake_gpu(DeviceArray.from_numpy(np.zeros((4, 8), np.float32), device="cpu"))
    b._stream = pending
    cap = b[1:].__dlpack__(stream=stream)  # through a view: the state is the allocation's
    assert syncs == ([pending] if waits else [])
    assert b._stream == (None if waits else pending)
    del cap


def test_devicearray_input_waits_for_pending_write(syncs):
    b = fake_gpu(DeviceArray.from_numpy(np.zeros((4, 8), np.float32), device="cpu"))
    b._stream = 0x1111  # as after rmsnorm_gated(..., out=b, stream=0x1111)
    # read on the writing stream: stream order suffices
    _adapters.convert(b, "x", 0x1111, [], False)
    assert syncs == [] and b._stream == 0x1111
    # read on another stream (a view of b, as an op input): wait, as for a CAI producer
    _adapters.convert(b[:, :4], "x", 0x2222, [], False)
    assert syncs == [0x1111] and b._stream is None
    # written on another stream than a pending write: wait for it, then the new write pends
    b._stream = 0x1111
    _adapters.convert(b, "out", 0x2222, [], True)
    assert syncs == [0x1111, 0x1111] and b._stream == 0x2222
    # a pending write on the default stream, read on a library stream
    b._stream = 0
    _adapters.convert(b, "z", 0x3333, [], False)
    assert syncs == [0x1111, 0x1111, 0] and b._stream is None
    # host memory: nothing to wait for, whatever the record says
    h = DeviceArray.from_numpy(np.zeros(8, np.float32), device="cpu")
    h._stream = 0x1111
    _adapters.convert(h, "weight", 0x2222, [], False)
    assert syncs == [0x1111, 0x1111, 0] and h._stream is None


def test_devicearray_views_share_pending_write(syncs):
    a = DeviceArray.zeros((4, 8), np.float32, device="cpu")
    assert a[1:]._stream is None
    a._stream = 0x1111
    assert a[1:]._stream == a.view()._stream == a.reshape(32)._stream == 0x1111
    assert from_pointer(a.data_ptr, a.shape, a.dtype, device="cpu", owner=a)._stream == 0x1111
    assert from_pointer(a.data_ptr, a.shape, a.dtype, device="cpu")._stream is None  # no owner: its own
    a._stream = None
    # an op writing a view (of a from_pointer view of a) records its stream for all of them
    v = from_pointer(a.data_ptr, a.shape, a.dtype, device="cpu", owner=a)
    x, w = np.ones((3, 8), np.float32), np.ones(8, np.float32)
    gatednorm.rmsnorm_gated(x, None, w, out=v[1:], stream=0x2222)
    assert a._stream == v._stream == v[1:]._stream == a[:1]._stream == 0x2222
    assert syncs == []
    # host copies of the parent and of a view wait for it
    fake_gpu(a)
    got = a.numpy()
    assert syncs == [0x2222] and a._stream is None and v._stream is None
    check_result(got[1:], x, None, w)
    a._stream = 0x3333
    u = a[1:, ::2]  # a strided view: the copy goes through its byte span
    u.numpy()
    assert syncs == [0x2222, 0x3333] and a._stream is None
    a._stream = 0x4444
    a[2].copy_(np.zeros(8, np.float32))  # writes from the host wait too
    assert syncs == [0x2222, 0x3333, 0x4444] and a._stream is None


# ================================================================================ raw pointers
def test_from_pointer(xzw):
    x, z, w = xzw
    out = np.full(SHAPE, NAN, np.float32)
    px = from_pointer(x.ctypes.data, x.shape, np.float32)
    assert px.device == "cpu" and px.shape == SHAPE and px.dtype == np.float32
    res = gatednorm.rmsnorm_gated(px, from_pointer(ctypes.c_void_p(z.ctypes.data), SHAPE, "fp32"),
                                  from_pointer(w.ctypes.data, w.shape, "float32"),
                                  out=from_pointer(out.ctypes.data, SHAPE, np.float32, device="cpu"))
    assert isinstance(res, DeviceArray)
    check_result(out, x, z, w)


def test_from_pointer_strided(rng):
    T, H, D = 4, 3, 32
    zb = rng.standard_normal((T, 4 * H * D)).astype(np.float16)
    z = zb[:, H * D:2 * H * D].reshape(T, H, D)
    x = rng.standard_normal((T, H, D)).astype(np.float16)
    w = np.ones(D, np.float16)
    pz = from_pointer(z.__array_interface__["data"][0], (T, H, D), np.float16, strides=(4 * H * D, D, 1), owner=zb)
    assert pz.base is zb and np.array_equal(pz.numpy(), z)
    check_result(gatednorm.rmsnorm_gated(x, pz, w), x, z, w)
    with pytest.raises(GatedNormError) as ei:
        from_pointer(x.ctypes.data, (T, H, D), np.float16, strides=(1, 1))
    assert ei.value.message.startswith("strides:")


# ================================================================================ hip-python
@pytest.fixture
def hip():
    try:
        import hip._util.types as t
    except Exception as e:  # pragma: no cover
        pytest.skip("hip-python is not importable: %s" % e)
    return t


def _hip_devicearray(t, a):
    d = t.DeviceArray(a)  # wraps the host buffer; CAI v3 after configure()
    d.configure(_force=True, shape=a.shape, typestr=a.dtype.str, itemsize=a.dtype.itemsize)
    return d


def test_hip_python_devicearray(hip, rng):
    x = rng.standard_normal(SHAPE).astype(np.float16)
    z = rng.standard_normal(SHAPE).astype(np.float16)
    w = np.ones(SHAPE[-1], np.float32)
    out = np.full(SHAPE, NAN, np.float16)
    hx, hz, hw, ho = (_hip_devicearray(hip, a) for a in (x, z, w, out))
    assert _adapters.kind_of(hx) == _adapters.CAI
    assert gatednorm.rmsnorm_gated(hx, hz, hw, out=ho) is ho
    check_result(out, x, z, w)


def test_hip_python_pointer(hip, xzw):
    x, z, w = xzw
    out = np.full(SHAPE, NAN, np.float32)
    px = hip.Pointer(x)
    v = from_pointer(px, SHAPE, np.float32)
    assert v.base is px and v.data_ptr == x.ctypes.data
    gatednorm.rmsnorm_gated(v, from_pointer(hip.Pointer(z), SHAPE, "fp32"), w,
                            out=from_pointer(hip.Pointer(out), SHAPE, "fp32"))
    check_result(out, x, z, w)


def test_hip_python_stream_handle(hip):
    try:
        from hip import hip as hiprt

        s = hiprt.hipStream_t.fromObj(0x7000)
    except Exception as e:  # pragma: no cover
        pytest.skip("cannot build a hipStream_t here: %s" % e)
    assert stream_handle(s) == 0x7000


# ================================================================================ GPU frameworks
def _gpu_framework(name):
    if importlib.util.find_spec(name) is None:
        pytest.skip("%s is not installed" % name)
    if gatednorm.device_count() == 0:
        pytest.skip("no GPU visible to libgatednorm")
    return __import__(name)


@pytest.mark.parametrize("dt", ["bfloat16", "float16", "float32"])
def test_torch(dt):
    torch = _gpu_framework("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no GPU")
    tdt = getattr(torch, dt)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(9, 4, 128, device="cuda", dtype=tdt, generator=g)
    qkvz = torch.randn(9, 4 * 4 * 128, device="cuda", dtype=tdt, generator=g)
    z = qkvz[:, 3 * 512:].view(9, 4, 128)
    w = torch.rand(128, device="cuda", dtype=torch.float32, generator=g) + 0.5
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):  # launched on torch's current stream
        y = gatednorm.rmsnorm_gated(x, z, w)
    s.synchronize()
    assert isinstance(y, torch.Tensor) and y.dtype == tdt and y.device == x.device
    np_ = lambda t: t.float().cpu().numpy()  # noqa: E731
    cmp = reference.compare(np_(y), reference.rmsnorm_gated(np_(x), np_(z), np_(w)), dt)
    assert cmp.ok, cmp
    # DeviceArray <-> torch through DLPack
    da = DeviceArray.from_numpy(np.arange(6, dtype=np.float32), device="cuda:0")
    assert torch.from_dlpack(da).cpu().tolist() == list(range(6))
    # a DeviceArray written on a library stream, read by torch on its own stream
    xs = DeviceArray.from_numpy(np_(x).astype(_dtypes.to_numpy_dtype(dt)), device=0)
    big = DeviceArray(x.shape, dt, device=0)
    gs = gatednorm.Stream(0)
    gatednorm.rmsnorm_gated(xs, None, DeviceArray.from_numpy(np_(w), device=0), out=big, stream=gs)
    tb = torch.from_dlpack(big)  # must wait for gs before torch reads
    cmp = reference.compare(np_(tb), reference.rmsnorm_gated(np_(x), None, np_(w)), dt)
    assert cmp.ok, cmp
    # out=None with a torch dtype / a numpy-style dtype name
    assert gatednorm.rmsnorm_gated(x, z, w, out_dtype=torch.float32).dtype == torch.float32
    assert gatednorm.rmsnorm_gated(x, z, w, out_dtype="fp16").dtype == torch.float16


def test_torch_gpu_custom_ops():
    """gatednorm.torch_ops on CUDA tensors: w4a16_matmul over a GPU weight's tiled buffer
    (shared through DLPack) at M of each kernel (gemv / lean, decode, mma) and the FP8 norms'
    copy ops, eager and under a fullgraph compile, give the Python functions' bits."""
    torch = _gpu_framework("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no GPU")
    import gatednorm.torch_ops as tops

    rng = np.random.default_rng(7)
    n, k = 256, 512
    w = gatednorm.W4A16Weight.from_float(rng.standard_normal((n, k)).astype(np.float32), group_size=128).to("cuda:0")
    args = tops.w4a16_args(w)
    assert args[0].is_cuda and args[0].data_ptr() == w._packed.data_ptr and args[1] is None
    op = torch.ops.gatednorm.w4a16_matmul
    torch._dynamo.reset()
    f = torch.compile(lambda a: op(a, *args), fullgraph=True, backend="aot_eager")
    for m in (1, 16, 33):
        a = torch.randn(m, k, device="cuda").to(torch.bfloat16)
        want = gatednorm.w4a16_matmul(a, w)
        assert torch.equal(op(a, *args), want) and torch.equal(f(a), want)
    x = torch.randn(6, 512, device="cuda").to(torch.bfloat16)
    r = torch.randn(6, 512, device="cuda").to(torch.bfloat16)
    wn = torch.rand(512, device="cuda") + 0.5
    r_op, r_fn = r.clone(), r.clone()
    y, q, sc = torch.ops.gatednorm.add_rmsnorm_fp8_copy(x, r_op, wn, scale_layout="col_pad4")
    e = gatednorm.add_rmsnorm(x, r_fn, wn, fp8=True, scale_layout="col_pad4")
    assert torch.equal(y, e.y) and torch.equal(q.view(torch.uint8), e.q.view(torch.uint8))
    assert torch.equal(sc, e.scales) and sc.stride() == e.scales.stride() and torch.equal(r_op, r_fn)
    xg, zg = x.view(6, 4, 128), r.view(6, 4, 128)
    q, sc, yc = torch.ops.gatednorm.rmsnorm_gated_fp8_copy(xg, zg, wn[:128])
    qe, se, ye = gatednorm.rmsnorm_gated_fp8(xg, zg, wn[:128], copy_dtype=torch.bfloat16)
    assert torch.equal(q.view(torch.uint8), qe.view(torch.uint8)) and torch.equal(sc, se) and torch.equal(yc, ye)


def test_cupy():
    cp = _gpu_framework("cupy")
    x = cp.random.standard_normal((9, 4, 64), dtype=cp.float32).astype(cp.float16)
    z = cp.random.standard_normal((9, 4, 64), dtype=cp.float32).astype(cp.float16)
    w = cp.ones(64, dtype=cp.float32)
    out = cp.full(x.shape, cp.nan, dtype=cp.float16)
    assert gatednorm.rmsnorm_gated(x, z, w, out=out) is out
    cmp = reference.compare(cp.asnumpy(out), reference.rmsnorm_gated(cp.asnumpy(x), cp.asnumpy(z), cp.asnumpy(w)),
                            np.float16)
    assert cmp.ok, cmp
    y = gatednorm.rmsnorm_gated(x, z, w)  # default out: a DeviceArray on x's GPU
    assert isinstance(y, DeviceArray) and np.array_equal(y.numpy(), cp.asnumpy(out))
    assert cp.array_equal(cp.asarray(y), out)  # exported through __cuda_array_interface__
    assert cp.array_equal(cp.from_dlpack(y), out)


def test_jax():
    jax = _gpu_framework("jax")
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("jax sees no GPU")
    rng = np.random.default_rng(0)
    x, z = (rng.standard_normal((5, 2, 64)).astype(np.float32) for _ in range(2))
    w = np.ones(64, np.float32)
    jx, jz, jw = (jax.device_put(a) for a in (x, z, w))
    y = gatednorm.rmsnorm_gated(jx, jz, jw)  # jax arrays are immutable: out is a DeviceArray
    jax.block_until_ready(jx)
    assert isinstance(y, DeviceArray)
    check_result(y, x, z, w)
    assert np.array_equal(np.asarray(jax.dlpack.from_dlpack(y)), y.numpy())


def test_device_array_and_pointer_misuse_is_refused_by_name():
    """A review of 2026-12-04: from_pointer took addresses outside [0, 2^63) (numpy() then
    segfaulted); view(element_strides=) checked neither the span nor the stride count (a
    segfault, then a struct.error in an op); float extents and float / bool indices were
    truncated; from_numpy made a 0-d array 1-d; copy=False copied silently; a (type, id)
    device of strings or past 32 bits raised TypeError / OverflowError; a 9-d DeviceArray
    was named "array", not the argument."""
    def refused(match, f, *a, **kw):
        with pytest.raises(GatedNormError) as ei:
            f(*a, **kw)
        assert ei.value.message.startswith(match), ei.value.message

    for addr in (-8, 1 << 63, (1 << 64) + 64):
        refused("ptr:", from_pointer, addr, (4,), "float32", device="cpu")
    a = DeviceArray.from_numpy(np.arange(4, dtype=np.float32), device="cpu")
    refused("shape:", a.view, (1 << 28,), element_strides=(1,))
    refused("shape:", a.view, (2,), element_strides=(-1,))  # element 0 is the first byte: -1 is before it
    refused("element_strides:", a.view, (2, 2), element_strides=(2,))
    refused("element_strides:", a.view, (2,), element_strides=(1.5,))
    assert np.array_equal(a.view((2,), element_strides=(3,)).numpy(), [0.0, 3.0])  # the last element: in
    assert np.array_equal(a[::-1].view((2,), element_strides=(-3,)).numpy(), [3.0, 0.0])
    refused("shape:", DeviceArray, (2.7,), device="cpu")
    refused("shape:", DeviceArray, (True,), device="cpu")
    refused("strides:", from_pointer, a.data_ptr if hasattr(a, "data_ptr") else a._ptr, (2,), "float32", strides=(2.0,),
            device="cpu", owner=a)
    for key in (1.5, True):
        with pytest.raises(IndexError):
            a[key]
    assert DeviceArray.from_numpy(np.array(3.0, np.float32), device="cpu").numpy().shape == ()
    if NUMPY_DLPACK_1:  # numpy 2's asarray(copy=False) asks __array__ for no copy
        with pytest.raises(ValueError, match="copy=False"):
            np.asarray(a, copy=False)
    refused("dtype:", DeviceArray, (2,), "nonsense", device="cpu")
    refused("x:", gatednorm.rmsnorm, DeviceArray((1,) * 8 + (16,), device="cpu"), np.ones(16, np.float32))  # 9 dims
    refused("device:", DeviceArray, (2,), device=("cpu", 0))
    refused("device:", DeviceArray, (2,), device=(1, 1 << 40))


def test_concurrent_writes_to_interleaved_host_views_are_kept():
    """Regression: copy_ into a strided view read, modified and wrote back the whole span, so
    two threads filling the even and the odd columns undid each other's writes."""
    import threading

    b = DeviceArray.zeros((64, 512), device="cpu")

    def fill(cols, base):
        for i in range(1, 31):
            b[:, cols].copy_(base + i)

    ts = [threading.Thread(target=fill, args=(slice(k, None, 2), 1000 * k)) for k in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    n = b.numpy()
    assert np.unique(n[:, 0::2]).tolist() == [30.0] and np.unique(n[:, 1::2]).tolist() == [1030.0]


@needs_numpy_dlpack_1
def test_from_pointer_over_read_only_memory_is_read_only():
    """Regression (review of 2026-12-04): a from_pointer view over a read-only buffer took
    fill_ and served as an op's output, writing into immutable bytes, and exported writeable."""
    src = np.frombuffer(bytes(range(64)), np.float32).reshape(1, 16)
    before = src.tobytes()
    v = from_pointer(src.ctypes.data, (1, 16), "float32", device="cpu", owner=src)
    w = np.ones(16, np.float32)
    for f in (lambda: v.fill_(5.0), lambda: v[0].copy_(3.0), lambda: v._memset(0),
              lambda: from_pointer(src.ctypes.data, (16,), "float32", device="cpu", owner=v).fill_(1.0)):
        with pytest.raises(GatedNormError, match="read-only"):
            f()
    for call in (lambda: gatednorm.rmsnorm(np.ones((1, 16), np.float32), w, y_out=v),
                 lambda: gatednorm.rmsnorm_gated(np.ones((1, 16), np.float32), None, w, out=v)):
        with pytest.raises(GatedNormError) as ei:
            call()
        assert "read-only memory cannot be an output" in ei.value.message
    assert src.tobytes() == before
    y = gatednorm.rmsnorm(v, w).y  # as an input it is fine
    assert reference.compare(y, reference.rmsnorm(src, w)["y"])
    assert not np.from_dlpack(v).flags.writeable
    with pytest.raises(BufferError, match="max_version"):
        v.__dlpack__()  # an unversioned capsule cannot say read-only
    buf = np.zeros(16, np.float32)  # a writable owner: writes go through
    from_pointer(buf.ctypes.data, (16,), "float32", device="cpu", owner=buf).fill_(2.0)
    assert (buf == 2.0).all()


def test_from_pointer_over_other_read_only_owners_is_read_only(tmp_path):
    """Regression (review of 2026-12-07): only numpy, memoryview and bytes owners were asked
    whether they refuse writes, so a view over a read-only mmap was writable and fill_ crashed
    the process (SIGSEGV); an owner whose __array_interface__ marks its data read-only was
    written.  Any buffer-protocol owner and the array interfaces' read-only flag count now."""
    import mmap

    path = tmp_path / "ro.bin"
    path.write_bytes(bytes(4096))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        addr = np.frombuffer(mm, np.uint8).ctypes.data
        v = from_pointer(addr, (1024,), "float32", device="cpu", owner=mm)
        with pytest.raises(GatedNormError, match="read-only"):
            v.fill_(1.0)
        del v
        gc.collect()

    class ReadOnlyInterface:
        def __init__(self):
            self.a = np.zeros((1, 16), np.float32)
            self.a.flags.writeable = False

        @property
        def __array_interface__(self):
            return self.a.__array_interface__

    owner = ReadOnlyInterface()
    v = from_pointer(owner.a.ctypes.data, (1, 16), "float32", device="cpu", owner=owner)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm(np.ones((1, 16), np.float32), np.ones(16, np.float32), y_out=v)
    assert "read-only memory cannot be an output" in ei.value.message
    assert not owner.a.any()
    rw = bytearray(64)  # a writable buffer-protocol owner: writes go through
    from_pointer(np.frombuffer(rw, np.uint8).ctypes.data, (16,), "float32", device="cpu", owner=rw).fill_(2.0)
    assert (np.frombuffer(rw, np.float32) == 2.0).all()


def test_from_pointer_keeps_its_pointer_object_beside_an_owner():
    """The docstring's promise (the ptr object is kept alive by the view) held only without
    ``owner``: with both, the pointer object, which may hold memory of its own, was dropped
    (a review).  ``.base`` stays the owner."""
    class Holder:  # owns the memory its address points into
        def __init__(self):
            self.buf = np.arange(4, dtype=np.float32)

        def __int__(self):
            return self.buf.ctypes.data

        __index__ = __int__

    owner = DeviceArray((4,), np.float32, device="cpu")
    holder = Holder()
    alive = weakref.ref(holder)
    v = from_pointer(holder, (4,), "float32", device="cpu", owner=owner)
    del holder
    gc.collect()
    assert alive() is not None and v.base is owner and v[1:].base is owner
    np.testing.assert_array_equal(v.numpy(), np.arange(4, dtype=np.float32))
    del v
    gc.collect()
    assert alive() is None


def test_malformed_producers_are_refused_naming_the_argument(xzw):
    """A review of 2026-12-04: an object with __dlpack__ but no __dlpack_device__ recursed
    until RecursionError; a bad CAI stream was blamed on x whatever argument carried it; an x
    whose metadata could not make an output (out=None) was named "shape" / "device"; an
    __array_interface__ mask was dropped silently."""
    x, z, w = xzw

    class OnlyDLPack:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kw):
            return self.a.__dlpack__(**kw)

    class ArrayIface:
        def __init__(self, a, **extra):
            self.__array_interface__ = {**a.__array_interface__, **extra}
            self.keep = a

    def refused(match, *args, **kw):
        with pytest.raises(GatedNormError) as ei:
            gatednorm.rmsnorm_gated(*args, **kw)
        assert ei.value.message.startswith(match), ei.value.message

    refused("z: OnlyDLPack has __dlpack__ but no __dlpack_device__", x, OnlyDLPack(z), w)
    refused("z: __cuda_array_interface__ stream", x, CAIDict(z, stream="abc"), w)
    refused("x: __cuda_array_interface__ stream", CAIDict(x, stream="abc"), z, w)
    refused("x: no output can be made like it", CAIDict(x, shape=(-4,) + x.shape[1:]), z, w)
    refused("z: __array_interface__ with a mask", x, ArrayIface(z, mask=np.zeros(z.shape, bool)), w)

    class RaisingIface:  # a property that raises: its RuntimeError escaped, naming nothing (review)
        @property
        def __array_interface__(self):
            raise RuntimeError("boom")

    refused("z: bad __array_interface__: RuntimeError: boom", x, RaisingIface(), w)
    out = np.full(SHAPE, NAN, np.float32)
    gatednorm.rmsnorm_gated(x, ArrayIface(z), w, out=out)  # the same interface without a mask: fine
    check_result(out, x, z, w)


# ------------------------------------------------------------------ torch tensors on the CPU
# torch is not a dependency: these run where it is installed (CI installs the CPU wheel for
# them, .ci/run), on CPU tensors: the torch adapter, torch dtypes of new outputs (FP8 ones
# included) and the autograd rule (a review found out= writes slipping past autograd).
def _torch_cpu():
    return pytest.importorskip("torch")


def _torch_bits(t):
    """t's bits as an integer tensor of its element size (compared exactly, NaN included)."""
    torch = sys.modules["torch"]
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]).clone()


def test_torch_cpu_every_op_matches_numpy(rng):
    torch = _torch_cpu()
    x = rng.standard_normal((5, 2, 128)).astype(_dtypes.bfloat16)
    z = rng.standard_normal((5, 2, 128)).astype(_dtypes.bfloat16)
    w = (rng.standard_normal(128) * 0.5 + 1).astype(np.float32)
    tx, tz, tw = (torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16) if a.dtype == _dtypes.bfloat16
                  else torch.from_numpy(a.copy()) for a in (x, z, w))
    with torch.inference_mode():
        y = gatednorm.rmsnorm_gated(tx, tz, tw)
        assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16 and y.shape == tx.shape
        assert y.view(torch.int16).numpy().tobytes() == gatednorm.rmsnorm_gated(x, z, w).tobytes()
        q, s = gatednorm.rmsnorm_gated_fp8(tx, tz, tw, scale_layout="col_pad4")
        qn, sn = gatednorm.rmsnorm_gated_fp8(x, z, w)
        assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and s.stride() == (1, 8)
        assert q.view(torch.uint8).numpy().tobytes() == qn.view(np.uint8).tobytes() and np.array_equal(s.numpy(), sn)
        x2, r2 = tx.reshape(5, 256), tz.reshape(5, 256).clone()
        out = gatednorm.add_rmsnorm(x2, r2, torch.ones(256), fp8=True, fp8_format="e4m3fnuz")
        want = gatednorm.add_rmsnorm(x.reshape(5, 256), z.reshape(5, 256).copy(), np.ones(256, np.float32), fp8=True,
                                     fp8_format="e4m3fnuz")
        assert out.residual is r2 and out.q.dtype == torch.float8_e4m3fnuz
        for got, exp in zip(out, want):
            assert _torch_bits(got).numpy().tobytes() == np.asarray(exp).tobytes()
        ry = gatednorm.rmsnorm(x2, torch.ones(256), y_dtype="fp32").y
        assert np.array_equal(ry.numpy(), gatednorm.rmsnorm(x.reshape(5, 256), np.ones(256, np.float32), y_dtype="fp32").y)
        gq, gs = gatednorm.group_quant_fp8(x2, scale_format="e8m0_packed", scale_layout="col_pad4")
        nq, ns = gatednorm.group_quant_fp8(x.reshape(5, 256), scale_format="e8m0_packed", scale_layout="col_pad4")
        assert gq.dtype == torch.float8_e4m3fn and gs.dtype == torch.int32
        assert gq.view(torch.uint8).numpy().tobytes() == nq.view(np.uint8).tobytes() and np.array_equal(gs.numpy(), ns)
        # W4A16 with an act-order weight: torch activations permuted without a warning (torch
        # warned that the weight's read-only permutation was made a tensor, review)
        wq = gatednorm.W4A16Weight.from_float(rng.standard_normal((32, 256)).astype(np.float32), 32, False)
        wq = gatednorm.W4A16Weight(*wq.to_plain(), perm=rng.permutation(256))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            o = gatednorm.w4a16_matmul(x2, wq)
        assert o.view(torch.int16).numpy().tobytes() == gatednorm.w4a16_matmul(x.reshape(5, 256), wq).tobytes()


def test_torch_cpu_outputs_under_autograd(rng):
    """gatednorm records no autograd: with grad mode on, a tensor it would write that requires
    grad is refused naming the argument, unwritten (the write slipped past autograd: wrong
    gradients, silently; review); any other tensor it writes has its version counter bumped,
    so a backward that saved it raises as after torch's own in-place ops; under no_grad a
    tensor that requires grad is written as asked."""
    torch = _torch_cpu()
    x = torch.from_numpy(rng.standard_normal((4, 64)).astype(np.float32))
    w = torch.ones(64)
    a = torch.randn(4, 64, requires_grad=True)
    h = a * 1.0  # a non-leaf that requires grad
    for out, name in ((h, "out"), (a, "out")):
        before = out.detach().clone()
        with pytest.raises(gatednorm.GatedNormError, match=r"^out: a tensor that requires grad"):
            gatednorm.rmsnorm_gated(x, None, w, out=out)
        assert torch.equal(out.detach(), before)
    r = torch.randn(4, 64, requires_grad=True) * 1.0
    with pytest.raises(gatednorm.GatedNormError, match=r"^residual: a tensor that requires grad"):
        gatednorm.add_rmsnorm(x, r, w)
    # a tensor autograd saved (mul saves its other operand), then overwritten by gatednorm
    c = torch.randn(4, 64)
    loss = (a * c).sum()
    v = c._version
    gatednorm.rmsnorm_gated(x, None, w, out=c)
    assert c._version > v
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    with torch.no_grad():  # no autograd to protect: written as asked
        y = gatednorm.rmsnorm_gated(x, None, w, out=a)
    assert y is a and torch.equal(a.detach(), gatednorm.rmsnorm_gated(x, None, w))
    assert not gatednorm.rmsnorm_gated(x, None, torch.ones(64, requires_grad=True)).requires_grad


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_torch_cpu_negative_bit_and_nested_are_refused(rng):
    """A tensor with its negative bit set holds -x in memory (``c.conj().imag`` makes one
    through public API): it was read raw, every sign flipped (review). Refused as an input
    and as an output, naming the argument, the output unwritten; resolve_neg() is accepted.
    A nested tensor raised torch's own RuntimeError (its shape is unreadable)."""
    torch = _torch_cpu()
    c = torch.complex(torch.zeros(4, 64), torch.from_numpy(rng.standard_normal((4, 64)).astype(np.float32)))
    xi = c.conj().imag
    assert xi.is_neg()
    w = torch.ones(64)
    with pytest.raises(gatednorm.GatedNormError, match=r"\bx: a torch tensor with its negative bit set"):
        gatednorm.rmsnorm_gated(xi, None, w)
    want = gatednorm.rmsnorm_gated(xi.resolve_neg(), None, w)
    assert torch.equal(want, gatednorm.rmsnorm_gated(-c.imag, None, w))
    out_c = torch.complex(torch.zeros(4, 64), torch.full((4, 64), 7.0))
    out = out_c.conj().imag  # reads -7.0
    with pytest.raises(gatednorm.GatedNormError, match=r"\bout: a torch tensor with its negative bit set"):
        gatednorm.rmsnorm_gated(xi.resolve_neg(), None, w, out=out)
    assert (out_c.imag == 7.0).all()
    nested = torch.nested.nested_tensor([torch.randn(2, 64), torch.randn(3, 64)])
    with pytest.raises(gatednorm.GatedNormError, match=r"\bx: a nested torch tensor"):  # its layout reads strided
        gatednorm.rmsnorm_gated(nested, None, w)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_torch_cpu_fresh_outputs_follow_each_call(rng):
    """Outputs made for torch inputs (ops_fp8's no-out= path, whose torch dtypes are cached by
    the dtype asked for and by x's dtype) take each call's dtypes, whatever came before: y of
    x's dtype or of y_dtype given as a name, a numpy dtype or a torch dtype, q of the format;
    an x numpy has no dtype for is refused naming x, then and on a second call."""
    torch = _torch_cpu()
    xs = {dt: torch.randn(3, 256).to(dt) for dt in (torch.bfloat16, torch.float16, torch.float32)}
    w = torch.ones(256)
    with torch.inference_mode():
        for _ in range(2):
            for dt, x in xs.items():
                out = gatednorm.rmsnorm(x, w, fp8=True, y=True)
                assert out.y.dtype == dt and out.q.dtype == torch.float8_e4m3fn and out.scales.dtype == torch.float32
                for y_dtype, want in (("fp32", torch.float32), (np.dtype(np.float16), torch.float16),
                                      (torch.bfloat16, torch.bfloat16)):
                    assert gatednorm.rmsnorm(x, w, y_dtype=y_dtype).y.dtype == want
                out = gatednorm.add_rmsnorm(x, x.clone(), w, fp8=True, fp8_format="e4m3fnuz", scale_format="e8m0")
                assert out.q.dtype == torch.float8_e4m3fnuz and out.scales.dtype == torch.uint8 and out.y.dtype == dt
            for _ in range(2):
                with pytest.raises(gatednorm.GatedNormError, match=r"\bx: dtype complex32 not supported"):
                    gatednorm.rmsnorm(torch.zeros(3, 256, dtype=torch.complex32), w)
            with pytest.raises(gatednorm.GatedNormError, match=r"\by_dtype: "):
                gatednorm.rmsnorm(xs[torch.float32], w, y_dtype="fp7")


def test_torch_cpu_written_tensors_bump_their_version_once_after_success(rng):
    """Every torch tensor the library writes gets one version bump, as torch's in-place ops
    give it, in every grad mode (no_grad and inference_mode too: a tensor saved for backward
    and overwritten there was used silently; review), and only once the call succeeded (a
    refused call bumped it). The bump went through torch's hook given the tensor, which
    iterates it: one bump a row (O(T) views)."""
    torch = _torch_cpu()
    x = torch.from_numpy(rng.standard_normal((6, 64)).astype(np.float32))
    w = torch.ones(64)
    a = torch.randn(6, 64, requires_grad=True)
    for mode in (torch.no_grad, torch.inference_mode):
        c = torch.randn(6, 64)
        loss = (a * c).sum()  # mul saved c
        v = c._version
        with mode():
            gatednorm.rmsnorm_gated(x, None, w, out=c)
        assert c._version == v + 1  # one bump for six rows
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()
        with mode(), pytest.raises(gatednorm.GatedNormError, match=r"\bweight: "):
            gatednorm.rmsnorm_gated(x, None, torch.ones(63), out=c)
        assert c._version == v + 1  # refused: not bumped
    r = torch.randn(6, 64)
    v = r._version
    with torch.no_grad():
        gatednorm.add_rmsnorm(x, r, w)  # the residual, written in place
    assert r._version == v + 1
    with torch.inference_mode():  # inference tensors have no counter; new outputs are not bumped
        y = gatednorm.rmsnorm_gated(torch.randn(6, 64), None, torch.ones(64))
        assert y.is_inference()
    y = gatednorm.rmsnorm_gated(x, None, w)
    assert y._version == 0


def test_torch_cpu_unreadable_layouts_and_fp8_names(rng):
    """A sparse tensor raised torch's own RuntimeError, naming nothing; an FP8 dtype the op does
    not take was named "dtype code 12 bits 8" (review): both name the argument and the thing."""
    torch = _torch_cpu()
    x = torch.randn(4, 64)
    with pytest.raises(gatednorm.GatedNormError, match=r"^x: a torch tensor of layout torch.sparse_coo"):
        gatednorm.rmsnorm_gated(x.to_sparse(), None, torch.ones(64))
    q = torch.zeros(4, 128, dtype=torch.float8_e5m2)
    with pytest.raises(gatednorm.GatedNormError, match=r"q: dtype float8_e5m2"):
        gatednorm.group_quant_fp8(torch.randn(4, 128), q=q)


@pytest.mark.parametrize("case", ["rmsnorm_gated", "rmsnorm_gated_fp8", "rmsnorm_gated_fp8_copy", "rmsnorm", "add_rmsnorm",
                                  "rmsnorm_fp8", "rmsnorm_fp8_copy", "add_rmsnorm_fp8", "add_rmsnorm_fp8_copy",
                                  "group_quant_fp8"])
def test_torch_cpu_custom_ops(rng, case):
    """gatednorm.torch_ops: each custom op passes torch.library.opcheck (its schema, fake
    implementation, dtypes, shapes and strides, the residual's mutation, against the real
    call), and a fullgraph torch.compile of it gives the eager function's bits."""
    torch = _torch_cpu()
    import gatednorm.torch_ops  # noqa: F401  (registers torch.ops.gatednorm.*)

    op = getattr(torch.ops.gatednorm, case)
    x = torch.randn(5, 4, 128, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    z = torch.randn(5, 4, 128, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    w = torch.rand(128, generator=torch.Generator().manual_seed(3)) + 0.5
    x2, w2 = x.reshape(5, 512), torch.rand(512, generator=torch.Generator().manual_seed(4)) + 0.5
    cases = {
        "rmsnorm_gated": [((x, z, w), dict(out_dtype=torch.float32)), ((x, None, w), dict(norm_before_gate=False))],
        "rmsnorm_gated_fp8": [((x, z, w), dict(scale_layout="col_pad4")),
                              ((x, z, w), dict(fp8_format="e4m3fnuz", scale_format="e8m0_packed", scale_layout="col"))],
        "rmsnorm_gated_fp8_copy": [((x, z, w), dict(scale_layout="col", copy_dtype=torch.float16)),
                                   ((x2, z.reshape(5, 512), w), dict(head_dim=128, scale_format="ue8m0",
                                                                      quantize_rounded=True))],
        "rmsnorm": [((x2, w2), dict(y_dtype=torch.float32)), ((x2, w2), dict(eps=1e-3))],
        "add_rmsnorm": [((x2, z.reshape(5, 512).clone(), w2), dict()), ((x2, z.reshape(5, 512).clone(), w2), dict(y_dtype=torch.float16))],
        "rmsnorm_fp8": [((x2, w2), dict(scale_layout="col_pad4", scale_format="e8m0_packed")),
                        ((x2, w2), dict(group_size=64, fp8_format="e4m3fnuz", fp8_max=224.0))],
        "rmsnorm_fp8_copy": [((x2, w2), dict(y_dtype=torch.float32, scale_layout="col")),
                             ((x2, w2), dict(quantize_rounded=True))],
        "add_rmsnorm_fp8": [((x2, z.reshape(5, 512).clone(), w2), dict(scale_layout="col_pad4")),
                            ((x2, z.reshape(5, 512).clone(), w2), dict(scale_format="e8m0", weight_offset=1.0))],
        "add_rmsnorm_fp8_copy": [((x2, z.reshape(5, 512).clone(), w2), dict(quantize_rounded=True)),
                                 ((x2, z.reshape(5, 512).clone(), w2), dict(y_dtype=torch.float16, scale_layout="col"))],
        "group_quant_fp8": [((x2,), dict(group_size=64, scale_format="ue8m0", scale_layout="col")), ((x2,), dict())],
    }[case]

    with torch.no_grad():
        for args, kw in cases:
            torch.library.opcheck(op, tuple(a.clone() if a is not None else None for a in args), kw,
                                  test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
            eager_args = [a.clone() if a is not None else None for a in args]
            comp_args = [a.clone() if a is not None else None for a in args]
            want = op(*eager_args, **kw)
            torch._dynamo.reset()  # each case its own compile (one code object: the recompile limit)
            got = torch.compile(lambda *a: op(*a, **kw), fullgraph=True, backend="aot_eager")(*comp_args)
            want, got = (want,) if isinstance(want, torch.Tensor) else want, (got,) if isinstance(got, torch.Tensor) else got
            for g, e in zip(got, want):
                assert g.dtype == e.dtype and g.shape == e.shape and g.stride() == e.stride()
                assert torch.equal(_torch_bits(g), _torch_bits(e))
            for a, b in zip(comp_args, eager_args):  # add_rmsnorm's residual updated alike
                assert a is None or torch.equal(_torch_bits(a), _torch_bits(b))


def test_torch_cpu_custom_ops_return_the_functions_outputs(rng):
    """Each op returns what its Python function returns from one call, in the function's
    order and bits: (q, scales, y) for the gated copy, (y, q, scales) for the norms' copies
    (a swapped pair of same-shaped outputs would pass opcheck); the add_rmsnorm ops leave
    residual as the function does."""
    torch = _torch_cpu()
    import gatednorm.torch_ops  # noqa: F401

    ops = torch.ops.gatednorm
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(3, 2, 128, generator=g) * 3).to(torch.bfloat16)
    z = torch.randn(3, 2, 128, generator=g).to(torch.bfloat16)
    w = torch.rand(128, generator=g) + 0.5
    r0 = torch.randn(3, 256, generator=g).to(torch.bfloat16)
    w2 = torch.rand(256, generator=g) + 0.5

    def same(got, want):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            assert torch.equal(_torch_bits(a), _torch_bits(b))

    kw = dict(scale_layout="col", quantize_rounded=True)
    same(ops.rmsnorm_gated_fp8_copy(x, z, w, copy_dtype=torch.float16, **kw),
         gatednorm.rmsnorm_gated_fp8(x, z, w, copy_dtype=torch.float16, **kw))
    x2 = x.reshape(3, 256)
    for name, residual, y in (("rmsnorm_fp8", False, False), ("rmsnorm_fp8_copy", False, True),
                              ("add_rmsnorm_fp8", True, False), ("add_rmsnorm_fp8_copy", True, True)):
        extra = dict(y_dtype=torch.float32) if y else {}
        r_op, r_fn = r0.clone(), r0.clone()
        got = getattr(ops, name)(*((x2, r_op) if residual else (x2,)), w2, **kw, **extra)
        fn = gatednorm.add_rmsnorm if residual else gatednorm.rmsnorm
        want = fn(*((x2, r_fn) if residual else (x2,)), w2, fp8=True, y=y, **kw, **extra)
        same(got, ((want.y,) if y else ()) + (want.q, want.scales))
        assert torch.equal(_torch_bits(r_op), _torch_bits(r_fn)) and (not residual or not torch.equal(r_op, r0))
    xh = x.to(torch.float16)  # the copy's dtype defaults to x's, as the norms' y_dtype does
    same(ops.rmsnorm_gated_fp8_copy(xh, z, w, quantize_rounded=True),
         gatednorm.rmsnorm_gated_fp8(xh, z, w, quantize_rounded=True, copy_dtype=torch.float16))
    r = torch.randn(3, 256, requires_grad=True)
    for name in ("add_rmsnorm_fp8", "add_rmsnorm_fp8_copy"):
        with pytest.raises(gatednorm.GatedNormError, match=r"^residual: a tensor that requires grad"):
            getattr(ops, name)(x2.float(), r, w2)
    with pytest.raises(gatednorm.GatedNormError, match=r"copy_dtype"):
        ops.rmsnorm_gated_fp8_copy(x, z, w, copy_dtype=torch.int8)


def test_torch_cpu_w4a16_custom_op(rng):
    """torch.ops.gatednorm.w4a16_matmul over w4a16_args of a plain weight (asym, sym,
    act-order) and of a tiled one made on the host: opcheck, a fullgraph compile over several
    M with one graph, and the bits of gatednorm.w4a16_matmul on the same numpy arrays; bad
    meta and out_dtype named."""
    torch = _torch_cpu()
    import torch._dynamo.testing  # a submodule torch does not import itself: the test runs alone too

    import gatednorm.torch_ops as tops

    n, k = 96, 256
    w_f = rng.standard_normal((n, k)).astype(np.float32)
    base = gatednorm.W4A16Weight.from_float(w_f, group_size=64)
    weights = {"asym": base, "sym": gatednorm.W4A16Weight.from_float(w_f, group_size=128, symmetric=True),
               "act_order": gatednorm.W4A16Weight(base.q, base.scales, base.zeros, perm=rng.permutation(k)),
               "tiled": base.prepack_host("cuda_mma", "bfloat16")}
    bias = rng.standard_normal(n).astype(np.float32)
    op = torch.ops.gatednorm.w4a16_matmul
    for name, w in weights.items():
        args = tops.w4a16_args(w)
        assert (args[3] is None) == (name != "act_order") and (args[1] is None) == (name == "tiled")
        a_np = rng.standard_normal((5, k)).astype(_dtypes.bfloat16)
        a = torch.from_numpy(a_np.view(np.int16).copy()).view(torch.bfloat16)
        for kw in (dict(), dict(bias=torch.from_numpy(bias), out_dtype=torch.float32)):
            torch.library.opcheck(op, (a,) + args, kw, test_utils=("test_schema", "test_faketensor",
                                                                   "test_aot_dispatch_static"))
            got = op(a, *args, **kw)
            want = gatednorm.w4a16_matmul(a_np, w, bias if kw else None, out_dtype=np.float32 if kw else None)
            assert got.shape == (5, n) and torch.equal(_torch_bits(got), _torch_bits(torch.from_numpy(
                want.view(np.int16) if want.dtype.itemsize == 2 else want)))
        torch._dynamo.reset()
        counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
        f = torch.compile(lambda x: op(x, *args), fullgraph=True, backend=counter)
        for m in (2, 3, 5, 4):  # the first M's static graph, then one dynamic graph for every other M
            x = a[:m].clone()
            assert torch.equal(_torch_bits(f(x)), _torch_bits(op(x, *args)))
        assert counter.frame_count == 2
    # One compiled helper for every layer: a weight's meta is compiled in (one graph a weight),
    # never a symbolic int the fake cannot read (review: the second weight's call crashed).
    torch._dynamo.reset()
    helper = torch.compile(lambda x, *wargs: op(x, *wargs), fullgraph=True, backend="aot_eager")
    for w in (weights["asym"], weights["sym"], weights["tiled"]):
        args = tops.w4a16_args(w)
        assert torch.equal(_torch_bits(helper(a, *args)), _torch_bits(op(a, *args)))
    args = tops.w4a16_args(base)
    with pytest.raises(gatednorm.GatedNormError, match=r"^meta: expected 8 ints"):
        op(a, *args[:4], args[4][:7])
    with pytest.raises(gatednorm.GatedNormError, match=r"out_dtype"):
        op(a, *args, out_dtype=torch.int32)
    bad = list(args[4])
    bad[0] = 1  # a plain weight's tensors labelled tiled: the C layer's layout checks refuse it
    with pytest.raises(gatednorm.GatedNormError, match=r"scales: must be NULL with a TILED weight"):
        op(a, *args[:4], bad)
    for i, v, what in ((1, -96, r"meta\[1\] \(n\): -96 is outside"), (7, 2 ** 40, r"meta\[7\] \(target\)")):
        bad = list(args[4])
        bad[i] = v
        with pytest.raises(gatednorm.GatedNormError, match=what):
            op(a, *args[:4], bad)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:  # the fake refuses what the call refuses
        fa = mode.from_tensor(a)
        for shaped, what in ((fa[:, :128], r"^a: expected \[M, K\] with K = 256"), (fa.float(), r"^a: dtype")):
            with pytest.raises(gatednorm.GatedNormError, match=what):
                op(shaped, *[mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args])
    with pytest.raises(gatednorm.GatedNormError, match=r"^w: expected a gatednorm.W4A16Weight"):
        tops.w4a16_args(w_f)


def test_torch_cpu_w4a16_fake_refuses_activations_of_another_dtype_than_a_tiled_weights(rng):
    """A tiled weight is prepacked for one activation dtype (meta[5]); w4a16_matmul's fake
    took activations of the other (fp16 for a bf16 weight), so a trace passed where every
    call fails (review).  The fake refuses them naming a, as the call does."""
    torch = _torch_cpu()
    import gatednorm.torch_ops as tops

    base = gatednorm.W4A16Weight.from_float(rng.standard_normal((96, 256)).astype(np.float32), group_size=64)
    for packed, other in (("bfloat16", torch.float16), ("float16", torch.bfloat16)):
        args = tops.w4a16_args(base.prepack_host("cuda_mma", packed))
        a, fits = torch.randn(3, 256).to(other), torch.randn(3, 256).to(getattr(torch, packed))
        with pytest.raises(gatednorm.GatedNormError, match=r"a: dtype %s, but the weight" % str(other)[6:]):
            torch.ops.gatednorm.w4a16_matmul(a, *args)
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
            fake = [mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args]
            with pytest.raises(gatednorm.GatedNormError, match=r"^a: dtype %s, but the weight" % str(other)[6:]):
                torch.ops.gatednorm.w4a16_matmul(mode.from_tensor(a), *fake)
            assert torch.ops.gatednorm.w4a16_matmul(mode.from_tensor(fits), *fake).shape == (3, 96)


def test_torch_cpu_custom_ops_residual_aliasing_any_backend(rng):
    """add_rmsnorm(r, r, w) as a custom op is r + r stored in r, eager and compiled under
    aot_eager and inductor (whose reinplacing passed r itself as x, so the call refused the
    overlap that aot_eager's copy hid; review): the op copies an x sharing residual's memory."""
    torch = _torch_cpu()
    import gatednorm.torch_ops  # noqa: F401

    ops = torch.ops.gatednorm
    w = torch.rand(256, generator=torch.Generator().manual_seed(3)) + 0.5
    r0 = torch.randn(4, 256, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    want_res = r0.clone()
    want = gatednorm.add_rmsnorm(r0.clone(), want_res, w, fp8=True)
    for backend in (None, "aot_eager", "inductor"):
        for name in ("add_rmsnorm", "add_rmsnorm_fp8_copy"):
            r = r0.clone()
            fn = getattr(ops, name)
            if backend is None:
                got = fn(r, r, w)
            else:
                torch._dynamo.reset()
                got = torch.compile(lambda t: fn(t, t, w), fullgraph=True, backend=backend)(r)
            y = got if name == "add_rmsnorm" else got[0]
            assert torch.equal(_torch_bits(r), _torch_bits(want_res)), (backend, name)
            assert torch.equal(_torch_bits(y), _torch_bits(want.y)), (backend, name)
            if name != "add_rmsnorm":
                assert torch.equal(got[1].view(torch.uint8), want.q.view(torch.uint8)) and torch.equal(got[2], want.scales)


def test_torch_cpu_custom_ops_weight_or_buffer_aliasing_any_backend(rng):
    """A weight that is a row of the residual, and an x and residual that are two storages over
    one buffer: the function refuses both overlaps, and the custom op computed or refused by
    backend (eager and inductor refused, aot_eager's copies computed; review). The op copies
    what meets the residual's memory (by address ranges), so every backend computes what the
    copies compute."""
    torch = _torch_cpu()
    import gatednorm.torch_ops  # noqa: F401

    ops = torch.ops.gatednorm
    H = 256
    r0 = torch.randn(4, H, generator=torch.Generator().manual_seed(5)) + 3.0
    buf0 = torch.randn(5 * H, generator=torch.Generator().manual_seed(6)).numpy()
    want_res = r0.clone()
    want = gatednorm.add_rmsnorm(torch.ones(4, H), want_res, r0[0].clone())
    arr = buf0.copy()
    want_res2 = torch.from_numpy(arr[:4 * H].copy()).view(4, H)
    want2 = gatednorm.add_rmsnorm(torch.from_numpy(arr[H:].copy()).view(4, H), want_res2, torch.ones(H))
    for backend in (None, "aot_eager"):
        torch._dynamo.reset()
        call = (lambda f: f) if backend is None else (lambda f: torch.compile(f, fullgraph=True, backend=backend))
        r = r0.clone()
        y = call(lambda t: ops.add_rmsnorm(torch.ones(4, H), t, t[0]))(r)
        assert torch.equal(r, want_res) and torch.equal(y, want.y), backend
        arr = buf0.copy()
        x, r = torch.from_numpy(arr[H:]).view(4, H), torch.from_numpy(arr[:4 * H]).view(4, H)
        y = call(lambda a, b: ops.add_rmsnorm(a, b, torch.ones(H)))(x, r)
        assert torch.equal(r, want_res2) and torch.equal(y, want2.y), backend


def test_torch_cpu_w4a16_linear_refuses_scales_that_overflow_its_dtype(rng):
    """W4A16Linear goes through the op over raw parts, which has no scale check: a scale past
    fp16's range gave NaN outputs where w4a16_matmul refuses (review). Judged on the weight
    when the module is made, raised for fp16 inputs, eager and compiled; bf16 inputs run."""
    torch = _torch_cpu()
    from gatednorm import torch_ops

    q = rng.integers(0, 256, (8, 64), dtype=np.uint8)  # plain: two codes a byte, K = 128
    w = gatednorm.W4A16Weight(q, np.full((8, 1), 1e5, np.float32), None)
    lin = torch_ops.W4A16Linear(w)
    x = torch.randn(2, 128)
    with pytest.raises(gatednorm.GatedNormError, match=r"^scales: .* overflows float16"):
        lin(x.to(torch.float16))
    assert torch.isfinite(lin(x.to(torch.bfloat16)).float()).all()
    compiled = torch.compile(lin, fullgraph=True, backend="eager")
    with pytest.raises(Exception, match=r"scales: .* overflows float16"):  # torch wraps what tracing raises
        compiled(x.to(torch.float16))
    assert torch.isfinite(compiled(x.to(torch.bfloat16)).float()).all()
    # the module pickles (torch.save), and its copy refuses the same way, eager and compiled
    # (the refusal's traced function is rebuilt, not pickled: a review found torch.save broken)
    buf = io.BytesIO()
    torch.save(lin, buf)
    buf.seek(0)
    torch_ops._REFUSALS.clear()  # as in a fresh process
    lin2 = torch.load(buf, weights_only=False)
    assert set(torch_ops._REFUSALS) == {lin2._fits[torch.float16].message}
    errors = []
    for _ in range(2):
        with pytest.raises(gatednorm.GatedNormError, match=r"^scales: .* overflows float16") as e:
            lin2(x.to(torch.float16))
        errors.append(e.value)
    assert errors[0] is not errors[1]  # a fresh error a call: one raised again kept every traceback
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"scales: .* overflows float16"):
        torch.compile(lin2, fullgraph=True, backend="eager")(x.to(torch.float16))
    # judged again on scales a state dict brings (a review: judged on the scales made with)
    fitting = torch_ops.W4A16Linear(gatednorm.W4A16Weight(q, np.full((8, 1), 0.5, np.float32), None))
    assert torch.isfinite(fitting(x.to(torch.float16)).float()).all()
    fitting.load_state_dict(lin.state_dict())
    with pytest.raises(gatednorm.GatedNormError, match=r"^scales: .* overflows float16"):
        fitting(x.to(torch.float16))
    lin.load_state_dict(torch_ops.W4A16Linear(gatednorm.W4A16Weight(q, np.full((8, 1), 0.5, np.float32), None)).state_dict())
    assert torch.isfinite(lin(x.to(torch.float16)).float()).all()


def test_torch_cpu_w4a16_linear_rejudges_scales_a_cast_changes(rng):
    """A cast of the module (.half(), .to(torch.bfloat16): a model's usual casts) casts its
    scales buffer, and the fits were still those judged on the scales it was made with
    (review): .half() made scales past fp16's range inf, and bf16 activations, judged fit,
    gave NaN outputs silently.  Judged again on the scales a cast leaves; a device move or a
    cast that keeps the scales' dtype judges nothing anew."""
    torch = _torch_cpu()
    from gatednorm import torch_ops

    q = rng.integers(0, 256, (8, 64), dtype=np.uint8)
    x = torch.randn(2, 128)
    lin = torch_ops.W4A16Linear(gatednorm.W4A16Weight(q, np.full((8, 1), 1e5, np.float32), None))
    assert torch.isfinite(lin(x.to(torch.bfloat16)).float()).all()
    lin.half()
    assert lin.scales.dtype == torch.float16
    for dt in (torch.bfloat16, torch.float16):
        with pytest.raises(gatednorm.GatedNormError, match=r"^scales: .* overflows"):
            lin(x.to(dt))
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"scales: .* overflows"):
        torch.compile(lin, fullgraph=True, backend="eager")(x.to(torch.bfloat16))
    fitting = torch_ops.W4A16Linear(gatednorm.W4A16Weight(q, np.full((8, 1), 0.5, np.float32), None))
    fits = fitting._fits
    fitting.to("cpu").float()  # the scales' dtype kept: the judgement kept
    assert fitting._fits is fits
    fitting.to(torch.bfloat16)
    assert fitting.scales.dtype == torch.bfloat16 and fitting._fits == {torch.bfloat16: None, torch.float16: None}
    assert torch.isfinite(fitting(x.to(torch.float16)).float()).all()


def test_torch_cpu_w4a16_linear_module(rng):
    """torch_ops.W4A16Linear: x [..., K] -> [..., N] with the bits of gatednorm.w4a16_matmul on
    the flattened rows (bias included, act-order weight included), eager, compiled and
    exported with a dynamic token count; its buffers are the weight's parts."""
    torch = _torch_cpu()
    import gatednorm.torch_ops as tops

    n, k = 80, 256
    base = gatednorm.W4A16Weight.from_float(rng.standard_normal((n, k)).astype(np.float32), group_size=64)
    act_order = gatednorm.W4A16Weight(base.q, base.scales, base.zeros, perm=rng.permutation(k))
    bias = torch.randn(n)
    for w in (base, act_order):
        lin = tops.W4A16Linear(w, bias)
        assert {name for name, _ in lin.named_buffers()} >= {"qweight", "scales", "bias"}
        assert "in_features=256, out_features=80, group_size=64" in repr(lin)
        x = torch.randn(2, 3, k).to(torch.bfloat16)
        want = gatednorm.w4a16_matmul(x.reshape(6, k), w, bias).view(2, 3, n)
        assert torch.equal(_torch_bits(lin(x)), _torch_bits(want))
        torch._dynamo.reset()
        assert torch.equal(_torch_bits(torch.compile(lin, fullgraph=True, backend="aot_eager")(x)), _torch_bits(want))
        T = torch.export.Dim("T", min=1, max=4096)
        ep = torch.export.export(lin, (x[0],), dynamic_shapes=({0: T},))
        x5 = torch.randn(5, k).to(torch.bfloat16)
        assert torch.equal(_torch_bits(ep.module()(x5)), _torch_bits(gatednorm.w4a16_matmul(x5, w, bias)))


def test_torch_cpu_allreduce_custom_ops(rng):
    """torch.ops.gatednorm.allreduce_add_rmsnorm{,_fp8,_fp8_copy} on two CPU ranks (threads of
    one process): eager and under a fullgraph compile, each rank's outputs and residual equal
    what its AllReduceGroup.add_rmsnorm gives for the same inputs, bit for bit; a handle of no
    live group is named."""
    torch = _torch_cpu()
    import gatednorm.torch_ops as tops
    from gatednorm import AllReduceGroup
    from gatednorm.testing import in_threads

    W, T, H = 2, 3, 256
    groups = AllReduceGroup.in_process(W, "cpu", max_tokens=8, hidden=H, dtype="bfloat16")
    handles = [tops.group_handle(g) for g in groups]
    assert handles == [tops.group_handle(g) for g in groups] and len(set(handles)) == W
    ops = torch.ops.gatednorm
    w = torch.rand(H, generator=torch.Generator().manual_seed(9)) + 0.5
    xs = [torch.randn(T, H, generator=torch.Generator().manual_seed(10 + r)).to(torch.bfloat16) for r in range(W)]
    r0 = torch.randn(T, H, generator=torch.Generator().manual_seed(20)).to(torch.bfloat16)
    kw = dict(scale_layout="col_pad4", quantize_rounded=True)
    cases = [("allreduce_add_rmsnorm", dict(), dict()), ("allreduce_add_rmsnorm_fp8", kw, dict(fp8=True, y=False, **kw)),
             ("allreduce_add_rmsnorm_fp8_copy", kw, dict(fp8=True, **kw))]
    compiled = {name: torch.compile(lambda x, r, h, name=name, k=k: getattr(ops, name)(x, r, w, h, **k),
                                    fullgraph=True, backend="aot_eager") for name, k, _ in cases}
    results = [dict() for _ in range(W)]

    def rank(i):
        for name, k, fkw in cases:
            for how in ("eager", "compiled"):
                res = r0.clone()
                f = compiled[name] if how == "compiled" else (lambda x, r, h: getattr(ops, name)(x, r, w, h, **k))
                got = f(xs[i], res, handles[i])
                ref_res = r0.clone()
                want = groups[i].add_rmsnorm(xs[i], ref_res, w, **fkw)
                results[i][(name, how)] = (got if isinstance(got, tuple) else (got,), res, want, ref_res)

    torch._dynamo.reset()
    in_threads(W, rank, timeout=120)
    for i in range(W):
        for name, _, fkw in cases:
            for how in ("eager", "compiled"):
                got, res, want, ref_res = results[i][(name, how)]
                expect = [v for v in (want.y, want.q, want.scales) if v is not None]
                assert len(got) == len(expect)
                for g, e in zip(got, expect):
                    assert g.dtype == e.dtype and g.stride() == e.stride()
                    assert torch.equal(_torch_bits(g), _torch_bits(e)), (i, name, how)
                assert torch.equal(_torch_bits(res), _torch_bits(ref_res)) and not torch.equal(res, r0)
    with pytest.raises(gatednorm.GatedNormError, match=r"^group: 123456 names no live AllReduceGroup"):
        ops.allreduce_add_rmsnorm(xs[0], r0.clone(), w, 123456)
    with pytest.raises(gatednorm.GatedNormError, match=r"^group: expected a gatednorm.AllReduceGroup"):
        tops.group_handle(object())
    del groups, results
    import gc
    gc.collect()
    with pytest.raises(gatednorm.GatedNormError, match=r"names no live AllReduceGroup"):
        ops.allreduce_add_rmsnorm(xs[0], r0.clone(), w, handles[0])


def test_torch_cpu_allreduce_ops_stay_in_step(rng):
    """The all-reduce ops as collectives (review): (1) a compiled graph makes the call even when
    its results go unused (dead-code elimination dropped it under aot_eager and inductor, so a
    compiled rank's next call met an eager peer's current one); (2) a call the op refuses
    before the library sees it (a residual requiring grad) counts in the group, as
    AllReduceGroup.add_rmsnorm's own refusals do, so both ranks' next calls fail loudly
    instead of pairing a later partial silently; (3) one handle a group under racing threads."""
    torch = _torch_cpu()
    import gatednorm.torch_ops as tops
    from gatednorm import AllReduceGroup
    from gatednorm.testing import in_threads

    H = 256
    w = torch.ones(H, dtype=torch.bfloat16)
    (g,) = AllReduceGroup.in_process(1, "cpu", max_tokens=8, hidden=H)
    h = tops.group_handle(g)

    def unused(x, r):
        torch.ops.gatednorm.allreduce_add_rmsnorm(x, r.clone(), w, h)
        return x + 1

    x, r = torch.randn(2, H).to(torch.bfloat16), torch.randn(2, H).to(torch.bfloat16)
    for backend in ("aot_eager", "inductor"):
        torch._dynamo.reset()
        with torch._inductor.config.patch(force_disable_caches=True):  # no graph compiled before this fix
            f = torch.compile(unused, backend=backend, fullgraph=True)
            before = g._entry.c_calls
            f(x, r)
            f(x, r)
        assert g._entry.c_calls - before == 2, backend

    groups = AllReduceGroup.in_process(2, "cpu", max_tokens=8, hidden=H)
    hs = [tops.group_handle(gr) for gr in groups]
    errors = {}

    def rank(i):
        try:
            if i == 0:
                with pytest.raises(gatednorm.GatedNormError, match=r"^residual: a tensor that requires grad"):
                    torch.ops.gatednorm.allreduce_add_rmsnorm(x, r.clone().requires_grad_(), w, hs[0])
            with torch.no_grad():
                torch.ops.gatednorm.allreduce_add_rmsnorm(x, r.clone(), w, hs[i])
        except gatednorm.GatedNormError as e:
            errors[i] = str(e)

    in_threads(2, rank, timeout=60)
    assert sorted(errors) == [0, 1] and all("meets" in m for m in errors.values()), errors

    more = AllReduceGroup.in_process(2, "cpu", max_tokens=8, hidden=H)
    got = [None] * 8
    in_threads(8, lambda i: got.__setitem__(i, tops.group_handle(more[i % 2])))
    assert len({got[i] for i in range(0, 8, 2)}) == 1 and len({got[i] for i in range(1, 8, 2)}) == 1
    assert got[0] != got[1]


def test_torch_cpu_custom_ops_fakes_refuse_the_group_sizes_the_call_refuses(rng):
    """The FP8 fakes check the group size against the row so that a trace fails where the call
    would; a group size below 1, and a gated group size that neither divides the head dim nor
    is a multiple of it (192 over D = 128, H = 3), passed the fake (scales of 0 columns for
    G <= 0): compiled and exported programs that fail at every run (review).  The fakes now
    refuse them naming group_size, as the calls do."""
    torch = _torch_cpu()
    import gatednorm.torch_ops  # noqa: F401

    ops = torch.ops.gatednorm
    x = torch.randn(4, 256).to(torch.bfloat16)
    x3 = torch.randn(4, 3, 128).to(torch.bfloat16)
    w, w1 = torch.rand(256) + 0.5, torch.rand(128) + 0.5
    cases = [(ops.group_quant_fp8, (x,), dict(group_size=g)) for g in (0, -128)]
    cases += [(ops.rmsnorm_fp8, (x, w), dict(group_size=0)), (ops.add_rmsnorm_fp8_copy, (x, x.clone(), w), dict(group_size=-64)),
              (ops.rmsnorm_gated_fp8, (x3, None, w1), dict(group_size=0)),
              (ops.rmsnorm_gated_fp8, (x3, None, w1), dict(group_size=192)),
              (ops.rmsnorm_gated_fp8_copy, (x3.reshape(4, 384), None, w1), dict(group_size=192, head_dim=128))]
    for op, args, kw in cases:
        with pytest.raises(gatednorm.GatedNormError, match=r"group_size: "):  # the call
            op(*[a.clone() if a is not None else None for a in args], **kw)
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode:  # the trace
            with pytest.raises(gatednorm.GatedNormError, match=r"^group_size: "):
                op(*[mode.from_tensor(a) if a is not None else None for a in args], **kw)
    for g, shaped in ((384, x3), (64, x3), (128, x3.reshape(4, 3, 2, 64))):  # what the call takes, the fake takes
        wd = w1[:shaped.shape[-1]].contiguous()
        want = ops.rmsnorm_gated_fp8(shaped, None, wd, group_size=g)[1]
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
            got = ops.rmsnorm_gated_fp8(mode.from_tensor(shaped), None, mode.from_tensor(wd), group_size=g)[1]
        assert got.shape == want.shape and got.stride() == want.stride()


def test_torch_cpu_custom_ops_state_survives_reload():
    """importlib.reload(gatednorm.torch_ops) (as IPython's autoreload does) made the module's
    registries anew (review): the handle counter restarted, so a group made after the reload
    got the handle of a live group made before it, and that group's calls ran on the new one
    (a collective summed with the wrong peers, no error); and a W4A16Linear made before it
    lost its compiled refusal (a KeyError, not the overflow named).  Run in a subprocess: a
    reload re-registers the ops for the whole process."""
    _torch_cpu()
    code = textwrap.dedent("""
        import importlib, numpy as np, torch
        import gatednorm, gatednorm.torch_ops as tops
        from gatednorm import AllReduceGroup
        H = 256
        (g1,) = AllReduceGroup.in_process(1, "cpu", max_tokens=8, hidden=H)
        h1 = tops.group_handle(g1)
        q = np.random.default_rng(0).integers(0, 256, (8, 64), dtype=np.uint8)
        lin = tops.W4A16Linear(gatednorm.W4A16Weight(q, np.full((8, 1), 1e5, np.float32), None))
        importlib.reload(tops)
        (g2,) = AllReduceGroup.in_process(1, "cpu", max_tokens=8, hidden=H)
        h2 = tops.group_handle(g2)
        assert h2 != h1 and tops.group_handle(g1) == h1, (h1, h2)
        before = (g1._entry.c_calls, g2._entry.c_calls)
        x = torch.ones(2, H, dtype=torch.bfloat16)
        with torch.no_grad():
            torch.ops.gatednorm.allreduce_add_rmsnorm(x, torch.zeros_like(x), torch.ones(H), h1)
        assert (g1._entry.c_calls - before[0], g2._entry.c_calls - before[1]) == (1, 0)
        try:
            torch.compile(lin, fullgraph=True, backend="eager")(torch.randn(2, 128).half())
        except Exception as e:
            assert "overflows float16" in str(e), str(e)[:1000]
        else:
            raise AssertionError("fp16 activations not refused")
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.returncode, r.stdout[-2000:], r.stderr[-3000:])


def test_torch_cpu_custom_ops_export_dynamic_tokens(rng):
    """torch.export with a dynamic token count (the docs promise export): the col_pad4 fakes
    once sliced [:T] from T_pad4 columns, a bound export cannot prove, so every dynamic export
    through them was refused (review).  The exported program runs other token counts with the
    eager ops' bits, add_rmsnorm's residual updated alike."""
    torch = _torch_cpu()
    import gatednorm.torch_ops as tops

    ops = torch.ops.gatednorm
    wq = gatednorm.W4A16Weight.from_float(rng.standard_normal((64, 256)).astype(np.float32), group_size=128)
    qw, sc, zp, _, meta = tops.w4a16_args(wq)

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("qw", qw)
            self.register_buffer("sc", sc)
            self.register_buffer("zp", zp)
            self.w1 = torch.nn.Parameter(torch.rand(256) + 0.5)
            self.w2 = torch.nn.Parameter(torch.rand(128) + 0.5)

        def forward(self, h, r, z):
            y, q1, s1 = ops.add_rmsnorm_fp8_copy(h, r, self.w1, scale_layout="col_pad4")
            q2, s2 = ops.rmsnorm_gated_fp8(y.view(-1, 2, 128), z, self.w2, scale_layout="col_pad4",
                                           scale_format="e8m0_packed")
            q3, s3 = ops.group_quant_fp8(y, scale_layout="col")
            return ops.w4a16_matmul(y, self.qw, self.sc, self.zp, None, meta), q1, s1, q2, s2, q3, s3

    def inputs(t):
        g = torch.Generator().manual_seed(t)
        return [torch.randn(*shape, generator=g).to(torch.bfloat16) for shape in ((t, 256), (t, 256), (t, 2, 128))]

    m = Layer()
    T = torch.export.Dim("T", min=1, max=4096)
    with torch.no_grad():
        ep = torch.export.export(m, tuple(inputs(4)), dynamic_shapes={"h": {0: T}, "r": {0: T}, "z": {0: T}})
        for t in (1, 5, 9):
            a, b = inputs(t), inputs(t)
            got, want = ep.module()(*a), m(*b)
            for g_, w_ in zip(got, want):
                assert g_.dtype == w_.dtype and g_.shape == w_.shape and g_.stride() == w_.stride()
                assert torch.equal(_torch_bits(g_), _torch_bits(w_))
            assert torch.equal(_torch_bits(a[1]), _torch_bits(b[1])) and not torch.equal(a[1], inputs(t)[1])


def test_torch_cpu_custom_ops_dynamic_tokens_and_parameters(rng):
    """One fullgraph graph serves every token count (the FP8 fakes once turned T into a
    constant: a recompile per T, a hard failure past 8 under fullgraph=True; review), and a
    weight that is an nn.Parameter compiles without no_grad (the ops' outputs are marked
    non-differentiable) while add_rmsnorm refuses a residual that requires grad, by name."""
    torch = _torch_cpu()
    import torch._dynamo.testing  # a submodule torch does not import itself: the test runs alone too

    import gatednorm.torch_ops  # noqa: F401

    ops = torch.ops.gatednorm
    w = torch.rand(128) + 0.5
    torch._dynamo.reset()
    counters = [torch._dynamo.testing.CompileCounterWithBackend("aot_eager") for _ in range(3)]
    f = torch.compile(lambda x, z: ops.rmsnorm_gated_fp8(x, z, w, scale_layout="col_pad4"), fullgraph=True,
                      backend=counters[0])
    g = torch.compile(lambda x: ops.group_quant_fp8(x.reshape(x.shape[0], -1), scale_layout="col"), fullgraph=True,
                      backend=counters[1])
    w2 = torch.rand(512) + 0.5
    h = torch.compile(lambda x, r: ops.add_rmsnorm_fp8_copy(x.reshape(x.shape[0], -1), r, w2, scale_layout="col_pad4"),
                      fullgraph=True, backend=counters[2])
    for T in range(2, 13):  # T = 2's static graph, then one dynamic graph (T = 1 would be a third)
        x = torch.randn(T, 4, 128).to(torch.bfloat16)
        z = torch.randn(T, 4, 128).to(torch.bfloat16)
        q, s = f(x, z)
        qe, se = gatednorm.rmsnorm_gated_fp8(x, z, w, scale_layout="col_pad4")
        assert torch.equal(q.view(torch.uint8), qe.view(torch.uint8)) and torch.equal(s, se) and s.stride() == se.stride()
        q, s = g(x)
        qe, se = gatednorm.group_quant_fp8(x.reshape(T, -1), scale_layout="col")
        assert torch.equal(q.view(torch.uint8), qe.view(torch.uint8)) and torch.equal(s, se) and s.stride() == se.stride()
        r, re = z.reshape(T, -1).clone(), z.reshape(T, -1).clone()
        y, q, s = h(x, r)
        e = gatednorm.add_rmsnorm(x.reshape(T, -1), re, w2, fp8=True, scale_layout="col_pad4")
        assert torch.equal(q.view(torch.uint8), e.q.view(torch.uint8)) and torch.equal(s, e.scales)
        assert s.stride() == e.scales.stride() and torch.equal(y, e.y) and torch.equal(r, re)
    assert [c.frame_count for c in counters] == [2, 2, 2]
    # A group size that changes between calls of one compiled function: one graph each (it
    # reached the fake as a symbolic int, which the option check refused; review).
    torch._dynamo.reset()
    gq = torch.compile(lambda x, gs: ops.group_quant_fp8(x, group_size=gs), fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 512).to(torch.bfloat16)
    for gs in (128, 64, 256):
        q, s = gq(x, gs)
        qe, se = gatednorm.group_quant_fp8(x, group_size=gs)
        assert torch.equal(q.view(torch.uint8), qe.view(torch.uint8)) and torch.equal(s, se)
    p = torch.nn.Parameter(torch.ones(512))
    x = torch.randn(5, 512)
    torch._dynamo.reset()
    y = torch.compile(lambda a: ops.rmsnorm(a, p), fullgraph=True, backend="aot_eager")(x)
    assert not y.requires_grad and torch.equal(y, gatednorm.rmsnorm(x, p.detach()).y)
    r = torch.randn(5, 512, requires_grad=True)
    with pytest.raises(gatednorm.GatedNormError, match=r"^residual: a tensor that requires grad"):
        ops.add_rmsnorm(x, r, p)


def test_torch_cpu_flush_denormal_caller_keeps_subnormals(rng):
    """A thread that flushes subnormals (torch.set_flush_denormal(True): FTZ / DAZ on x86)
    gets the same bits from the CPU backend as one that does not, every op included (the host
    arithmetic runs under the IEEE defaults, then the thread's own settings come back): tiny
    and pooled gated norms, add-RMSNorm (+ FP8) with a subnormal residual sum, W4A16 with
    subnormal dequantized weights, the CPU all-reduce's rank sums (ranks as
    threads, each flushing)."""
    torch = _torch_cpu()
    from gatednorm import AllReduceGroup
    from gatednorm.testing import in_threads

    tiny = 1e-39
    cases = {}
    w_tiny = np.full(64, tiny, np.float32)  # made before the flush: numpy's own conversion would flush it
    for rows in (2, 4096):
        x = rng.standard_normal((rows, 64)).astype(np.float32)
        cases["gated%d" % rows] = lambda x=x: gatednorm.rmsnorm_gated(x, None, w_tiny)
    xb = np.full((3, 256), tiny, np.float32).astype(_dtypes.bfloat16)
    cases["add"] = lambda: gatednorm.add_rmsnorm(xb, xb.copy(), np.ones(256, np.float32), fp8=True).residual
    k, n = 64, 32
    wq = gatednorm.W4A16Weight(rng.integers(0, 256, (n, k // 2), dtype=np.uint8),
                               np.full((n, 2), 2.0 ** -130, np.float32), rng.integers(0, 16, (n, 2), dtype=np.uint8))
    eye = np.eye(k, dtype=np.float32).astype(_dtypes.bfloat16)
    cases["w4a16"] = lambda: gatednorm.w4a16_matmul(eye, wq, out_dtype=np.float32)
    want = {name: np.array(f()) for name, f in cases.items()}
    for name, v in want.items():
        assert np.count_nonzero(v) > 0 and (np.abs(v.astype(np.float32)) < 2.0 ** -126).any(), name
    assert torch.set_flush_denormal(True), "no flush-to-zero control on this CPU"
    try:
        assert float(torch.tensor([tiny]) * 1.0) == 0.0  # the thread flushes now
        for name, f in cases.items():
            got = np.array(f())
            assert np.array_equal(got.view(np.uint8), want[name].view(np.uint8)), name
        assert float(torch.tensor([tiny]) * 1.0) == 0.0  # and still does after the calls
    finally:
        torch.set_flush_denormal(False)
    # the CPU all-reduce: each rank's thread flushing, partial sums subnormal
    W, T, H = 2, 2, 256
    xs = [np.full((T, H), tiny * (r + 1), np.float32).astype(_dtypes.bfloat16) for r in range(W)]

    def run(flush):
        groups = AllReduceGroup.in_process(W, "cpu", max_tokens=4, hidden=H, dtype="bfloat16")
        out = [None] * W

        def rank(i):
            torch.set_flush_denormal(flush)  # this thread's own setting
            res = np.zeros((T, H), _dtypes.bfloat16)
            groups[i].add_rmsnorm(xs[i], res, np.ones(H, np.float32), y=False, fp8=True)
            out[i] = res

        in_threads(W, rank, timeout=60)
        for g in groups:
            g.close()
        return out

    plain, flushed = run(False), run(True)
    assert np.count_nonzero(plain[0].astype(np.float32)) == T * H
    for a, b in zip(plain, flushed):
        assert np.array_equal(a.view(np.uint16), b.view(np.uint16))


def test_masked_array_advice_names_the_argument(xzw):
    """The refusal advised "pass x.data or x.filled(value)" whatever the argument (out, z,
    weight): it names the argument at fault (hostile review)."""
    x, z, w = xzw
    for kw, name in [(dict(out=np.ma.masked_array(np.full(SHAPE, NAN, np.float32))), "out"),
                     (dict(z=np.ma.masked_array(z)), "z"), (dict(weight=np.ma.masked_array(w)), "weight")]:
        a = dict(x=x, z=z, weight=w, out=None)
        a.update(kw)
        out_before = None if a["out"] is None else a["out"].data.tobytes()
        with pytest.raises(gatednorm.InvalidArgumentError) as ei:
            gatednorm.rmsnorm_gated(a["x"], a["z"], a["weight"], out=a["out"])
        assert ei.value.message.startswith(name + ": numpy masked arrays are not supported"), ei.value.message
        assert ei.value.message.endswith("pass %s.data or %s.filled(value)" % (name, name)), ei.value.message
        if out_before is not None:
            assert a["out"].data.tobytes() == out_before


def test_dlpack_null_shape_and_disagreeing_device_are_refused_by_name(xzw):
    """Regression (hostile review): a DLPack tensor of ndim > 0 with a NULL shape was read
    through (a segfault), and a __dlpack_device__ naming another device than the capsule's
    tensor was taken on the tensor's word (the stream passed to __dlpack__ was chosen for the
    other device).  Both are refused naming the argument; each capsule's deleter runs once."""
    x, z, w = xzw
    ffi = _dlpack.dlffi
    deleted = []

    @ffi.callback("void(DLManagedTensorVersioned *)")
    def deleter(p):
        deleted.append(int(ffi.cast("uintptr_t", p)))

    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    keep = []

    def capsule(device=(1, 0), null_shape=False):
        m = ffi.new("DLManagedTensorVersioned *")
        m.version.major, m.deleter = 1, deleter
        shape = ffi.new("int64_t[]", list(x.shape))
        t = m.dl_tensor
        t.data = ffi.cast("void *", x.ctypes.data)
        t.device.device_type, t.device.device_id = device
        t.ndim = x.ndim
        t.dtype.code, t.dtype.bits, t.dtype.lanes = 2, 32, 1
        t.shape = ffi.NULL if null_shape else shape
        keep.append((m, shape))
        return new_capsule(int(ffi.cast("uintptr_t", m)), b"dltensor_versioned", None), int(ffi.cast("uintptr_t", m))

    class Producer:
        def __init__(self, cap, device=(1, 0)):
            self.cap, self.device = cap, device

        def __dlpack__(self, **kw):
            return self.cap

        def __dlpack_device__(self):
            return self.device

    for kw, pdev, match in (({"null_shape": True}, (1, 0), "x: the DLPack tensor has 3 dims but a NULL shape"),
                            ({"device": (2, 0)}, (1, 0), "x: __dlpack_device__ says device (1, 0), but its DLPack"),
                            ({}, (2, 0), "x: __dlpack_device__ says device (2, 0), but its DLPack")):
        cap, addr = capsule(**kw)
        out = np.full(SHAPE, NAN, np.float32)
        with pytest.raises(GatedNormError) as ei:
            gatednorm.rmsnorm_gated(Producer(cap, pdev), z, w, out=out)
        assert ei.value.message.startswith(match), ei.value.message
        assert isinstance(ei.value, ValueError) and np.isnan(out).all()
        assert deleted.count(addr) == 1
    cap, addr = capsule()  # the same tensor, told truly: computed
    out = np.full(SHAPE, NAN, np.float32)
    gatednorm.rmsnorm_gated(Producer(cap), z, w, out=out)
    check_result(out, x, z, w)
    assert deleted.count(addr) == 1


def test_devicearray_copies_and_pickles_own_their_memory(rng):
    """Regression (hostile review): copy.deepcopy and pickle copied a DeviceArray's raw
    pointer into a second owner of the same block, which freed it twice (abort) or read it
    after the original freed it.  A deep copy or a loaded pickle is a new array with the
    elements; copy.copy stays a view of the same memory; the block itself refuses copies."""
    import copy
    import pickle

    src = rng.standard_normal((3, 8)).astype(np.float32)
    code = textwrap.dedent("""
        import copy, gc, pickle, numpy as np
        from gatednorm import DeviceArray
        a = DeviceArray.from_numpy(np.arange(24, dtype=np.float32).reshape(3, 8), device="cpu")
        b = copy.deepcopy(a)
        c = pickle.loads(pickle.dumps(a[:, ::2]))
        del a
        gc.collect()
        DeviceArray.from_numpy(np.full(24, 7, np.float32), device="cpu")
        assert (b.numpy() == np.arange(24).reshape(3, 8)).all()
        assert (c.numpy() == np.arange(24).reshape(3, 8)[:, ::2]).all()
        del b, c
        gc.collect()
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])
    a = DeviceArray.from_numpy(src, device="cpu")
    d = copy.deepcopy(a)
    assert d._ptr != a._ptr and np.array_equal(d.numpy(), src)
    p = pickle.loads(pickle.dumps(a))
    assert p._ptr != a._ptr and p.device == "cpu" and np.array_equal(p.numpy(), src)
    s = copy.copy(a)
    assert s._ptr == a._ptr and s._sync is a._sync
    with pytest.raises(TypeError):
        copy.deepcopy(a._base)
