"""The Python call layer at the inputs a mutation review found no test holding (78 mutants
of _call.py, _array.py, _dtypes.py and the wrappers' option checks; 19 survived): read-only
and strided outputs, torch views with a storage offset, DLPack copies and byte offsets,
byte strides that are no multiple of the element size, a producer re-entering the library,
descriptors that outlive their scratch, unhashable options, dtype names in any case, ...
Each test passes on the library and failed on its mutant."""
import ctypes
import gc
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gatednorm
from gatednorm import DeviceArray, GatedNormError, _adapters, _call, _dlpack, _dtypes, _runtime, from_pointer, ops_fp8
from gatednorm._ffi import ffi



def test_from_pointer_over_read_only_memoryview_is_read_only():
    b = bytearray(64)
    mv = memoryview(b).toreadonly()
    addr = np.frombuffer(b, np.uint8).ctypes.data
    v = from_pointer(addr, (2, 8), np.float32, device="cpu", owner=mv)
    with pytest.raises(gatednorm.InvalidArgumentError, match="^out: a DeviceArray over read-only memory"):
        gatednorm.rmsnorm_gated(np.ones((2, 8), np.float32), None, np.ones(8, np.float32), out=v)
    assert not any(b)

def test_too_many_indices():
    a = DeviceArray.zeros((2, 3), np.float32, device="cpu")
    with pytest.raises(IndexError):
        a[0, 0, 0]
    with pytest.raises(IndexError):
        a[:, :, 1]

@pytest.mark.parametrize("name, dt", [("FP16", np.float16), ("Float32", np.float32), ("HALF", np.float16)])
def test_dtype_names_are_case_insensitive(name, dt):
    assert _dtypes.to_numpy_dtype(name) == dt
    y = gatednorm.rmsnorm_gated(np.ones((2, 8), np.float32), None, np.ones(8, np.float32), out_dtype=name)
    assert y.dtype == dt



def test_call_new_refuses_read_only_given_output():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 128)).astype(np.float32); r = rng.standard_normal((2, 128)).astype(np.float32)
    w = np.ones(128, np.float32)
    q = np.zeros((2, 128), _dtypes.float8_e4m3fn); q.flags.writeable = False
    s = np.zeros((2, 1), np.float32); r_out = np.zeros_like(r)
    e = ops_fp8._ADD_ENTRY.with_outputs(ops_fp8._OUT_OF_PLACE_OUTPUTS)
    with pytest.raises(gatednorm.InvalidArgumentError, match="^q: "):
        e.call(None, x, r, w, r_out, _call.New(), q, s, params=e.params())  # y_out made (New), q given read-only
    assert not q.view(np.uint8).any()



def test_read_only_strided_out():
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    w = np.ones(8, np.float32)
    base = np.full((4, 16), np.nan, np.float32)
    out = base[:, :8]
    out.flags.writeable = False
    with pytest.raises(gatednorm.InvalidArgumentError, match="^out: numpy array is read-only"):
        gatednorm.rmsnorm_gated(x, None, w, out=out)
    assert np.isnan(base).all()


def test_read_only_array_interface_out_is_not_called_numpy():
    """An __array_interface__ producer's read-only output was refused as a "numpy array"
    (a review of 2026-12-06): the message names what it is."""
    x = np.ones((4, 8), np.float32)
    w = np.ones(8, np.float32)
    base = np.full((4, 8), np.nan, np.float32)
    base.flags.writeable = False

    class Producer:
        __array_interface__ = base.__array_interface__

    with pytest.raises(gatednorm.InvalidArgumentError, match=r"^out: read-only array \(its __array_interface__ says so\)"):
        gatednorm.rmsnorm_gated(x, None, w, out=Producer())
    assert np.isnan(base).all()



@pytest.fixture
def syncs(monkeypatch):
    calls = []
    monkeypatch.setattr(_runtime, "synchronize", lambda s=None: calls.append(s))
    return calls

def test_op_input_waits_for_pending_write_through_the_entry(syncs):
    x = DeviceArray.from_numpy(np.ones((4, 8), np.float32), device="cpu")
    x._devtype = _runtime.CUDA; x._t = None  # fake GPU memory (as test_adapters.fake_gpu)
    x._stream = 0x1111  # as after an op wrote it on stream 0x1111
    with pytest.raises(GatedNormError):  # the CPU build cannot run it; the wait comes first
        gatednorm.rmsnorm_gated(x, None, np.ones(8, np.float32), out=np.empty((4, 8), np.float32), stream=0x2222)
    assert syncs == [0x1111] and x._stream is None



def test_torch_cpu_views_with_a_storage_offset():
    torch = pytest.importorskip("torch")
    base = torch.randn(6, 64); w = torch.ones(64)
    x = base[2:]                      # storage_offset 128 elements
    obase = torch.full((6, 64), float("nan")); out = obase[1:5]
    with torch.no_grad():
        gatednorm.rmsnorm_gated(x, None, w, out=out)
    ref = gatednorm.rmsnorm_gated(x.numpy(), None, w.numpy())
    np.testing.assert_array_equal(out.numpy(), ref)
    assert torch.isnan(obase[0]).all() and torch.isnan(obase[5]).all()



class CopyingProducer:
    """A DLPack 1.0 producer that hands out a copy (numpy's copy=True sets DLPACK_FLAG_BITMASK_IS_COPIED)."""
    def __init__(self, a): self.a = a
    def __dlpack_device__(self): return self.a.__dlpack_device__()
    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        return self.a.__dlpack__(max_version=max_version, copy=True)

def test_dlpack_copy_refused_as_output():
    x = np.ones((2, 8), np.float32); w = np.ones(8, np.float32)
    out = np.full((2, 8), np.nan, np.float32)
    with pytest.raises(gatednorm.InvalidArgumentError, match="^out: .*as a copy"):
        gatednorm.rmsnorm_gated(x, None, w, out=CopyingProducer(out))
    # an input given as a copy is fine
    np.testing.assert_array_equal(gatednorm.rmsnorm_gated(CopyingProducer(x), None, w),
                                  gatednorm.rmsnorm_gated(x, None, w))



_get = ctypes.pythonapi.PyCapsule_GetPointer
_get.restype, _get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]

class OffsetProducer:
    """Exports rows [skip:] of a C-contiguous float32 array as (data = row 0, byte_offset = skip rows)."""
    def __init__(self, a, skip): self.a, self.skip = a, skip
    def __dlpack_device__(self): return (1, 0)
    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        a, k = self.a, self.skip
        cap = _dlpack.export(a, a.ctypes.data, 1, 0, (a.shape[0] - k, a.shape[1]), (a.shape[1], 1), 2, 32, False)
        _dlpack._exported[_get(cap, b"dltensor")][0].dl_tensor.byte_offset = k * a.strides[0]
        return cap

def test_dlpack_byte_offset_is_honoured():
    big = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    w = np.ones(16, np.float32)
    got = gatednorm.rmsnorm_gated(OffsetProducer(big, 2), None, w)
    np.testing.assert_array_equal(np.asarray(got), gatednorm.rmsnorm_gated(big[2:], None, w))



class ReentrantCAI:
    def __init__(self, a, on_read=None): self.a, self.on_read = a, on_read
    @property
    def __cuda_array_interface__(self):
        if self.on_read: self.on_read()   # a producer whose export re-enters the library
        a = self.a
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False), "strides": None, "version": 3}

def test_reentrant_export_keeps_the_outer_descriptors():
    rng = np.random.default_rng(0)
    x, z, x2 = (rng.standard_normal((4, 16)).astype(np.float32) for _ in range(3))
    w = np.ones(16, np.float32)
    def inner():
        gatednorm.rmsnorm_gated(ReentrantCAI(x2), None, ReentrantCAI(w), out=ReentrantCAI(np.empty_like(x2)))
    out = np.full((4, 16), np.nan, np.float32)
    gatednorm.rmsnorm_gated(ReentrantCAI(x), ReentrantCAI(z, on_read=inner), ReentrantCAI(w), out=ReentrantCAI(out))
    np.testing.assert_array_equal(out, gatednorm.rmsnorm_gated(x, z, w))



class CAI:
    def __init__(self, a): self.a = a
    @property
    def __cuda_array_interface__(self):
        a = self.a
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False), "strides": None, "version": 3}

def test_convert_returns_a_descriptor_that_owns_its_memory():
    x = np.ones((3, 5), np.float32)
    t = _call.convert(CAI(x), "x", 0, [], False)
    gc.collect()
    junk = [ffi.new("gatednorm_tensor[16]") for _ in range(64)]   # reuse any freed scratch block
    for j in junk:
        ffi.memmove(j, b"\xff" * ffi.sizeof(j), ffi.sizeof(j))
    assert (t.ndim, t.shape[0], t.shape[1], int(ffi.cast("uintptr_t", t.data))) == (2, 3, 5, x.ctypes.data)



@pytest.mark.parametrize("kw, name", [(dict(activation=["silu"]), "activation"), (dict(fp8_format={}), "fp8_format")])
def test_unhashable_choice_is_named(kw, name):
    x, w = np.ones((2, 128), np.float32), np.ones(128, np.float32)
    f = gatednorm.rmsnorm_gated if name == "activation" else gatednorm.group_quant_fp8
    with pytest.raises(gatednorm.InvalidArgumentError, match="^%s: expected one of" % name):
        f(x, x, w, **kw) if name == "activation" else f(x, **kw)



def test_byte_strides_not_multiple_of_itemsize_are_refused():
    buf = np.zeros(4 * 18 + 64, np.uint8)
    x = np.lib.stride_tricks.as_strided(buf[:64].view(np.float32), shape=(4, 8), strides=(18, 4))  # rows 18 bytes apart
    with pytest.raises(gatednorm.InvalidArgumentError, match="^x: byte strides .* not multiples of the element size 4"):
        gatednorm.rmsnorm_gated(x, None, np.ones(8, np.float32))

def test_cai_byte_strides_not_multiple_of_itemsize_are_refused():
    a = np.zeros(64, np.float32)
    cai = type("C", (), {})()
    cai.__cuda_array_interface__ = {"shape": (4, 8), "typestr": "<f4", "data": (a.ctypes.data, False),
                                    "strides": (18, 4), "version": 3}
    with pytest.raises(gatednorm.InvalidArgumentError, match="^x: byte strides"):
        gatednorm.rmsnorm_gated(cai, None, np.ones(8, np.float32))



def test_adapter_refuses_read_only_devicearray_output():
    ro = np.zeros((2, 8), np.float32); ro.flags.writeable = False
    v = from_pointer(ro.ctypes.data, ro.shape, ro.dtype, device="cpu", owner=ro)
    with pytest.raises(gatednorm.InvalidArgumentError, match="^out: a DeviceArray over read-only memory"):
        _adapters.convert(v, "out", 0, [], True)

def test_devicearray_subclass_read_only_output_is_refused():
    class Sub(DeviceArray):
        __slots__ = ()
    ro = np.full((2, 8), np.nan, np.float32); ro.flags.writeable = False
    v = from_pointer(ro.ctypes.data, ro.shape, ro.dtype, device="cpu", owner=ro)
    s = Sub._view(v._ptr, v._shape, v._estrides, v._dtype, v._devtype, v._devid, ro, v._sync)
    with pytest.raises(gatednorm.InvalidArgumentError, match="^out:"):
        gatednorm.rmsnorm_gated(np.ones((2, 8), np.float32), None, np.ones(8, np.float32), out=s)
    assert np.isnan(ro).all()



def test_devicearray_subclass_output_records_its_write_only_after_success():
    """A DeviceArray subclass output (the adapter path, not the exact-type one) had its pending
    stream recorded while its argument was read, so a refused call left a pending write that
    made later reads wait (review): recorded once the call succeeded, as for DeviceArray."""
    class Sub(DeviceArray):
        __slots__ = ()
    buf = np.full((2, 8), np.nan, np.float32)
    v = from_pointer(buf.ctypes.data, buf.shape, buf.dtype, device="cpu", owner=buf)
    s = Sub._view(v._ptr, v._shape, v._estrides, v._dtype, v._devtype, v._devid, buf, v._sync)
    x = np.ones((2, 8), np.float32)
    with pytest.raises(gatednorm.InvalidArgumentError, match=r"\bweight: "):
        gatednorm.rmsnorm_gated(x, None, np.ones(7, np.float32), out=s)
    assert s._sync.stream is None and np.isnan(buf).all()
    gatednorm.rmsnorm_gated(x, None, np.ones(8, np.float32), out=s)
    assert s._sync.stream == 0 and not np.isnan(buf).any()


def test_torch_cpu_bool_dtype_is_known():
    torch = pytest.importorskip("torch")
    b = torch.zeros((2, 8), dtype=torch.bool)
    assert _call.dtype_of(b) == np.bool_
    with pytest.raises(gatednorm.InvalidArgumentError) as ei:
        gatednorm.rmsnorm_gated(torch.ones(2, 8), None, torch.ones(8), out=b, out_dtype="float32")
    assert ei.value.message == "out_dtype: float32 does not match out's dtype bool"



def test_new_output_of_a_dlpack_bf16_input_is_bf16_in_a_fresh_process():
    pytest.importorskip("jax")
    code = textwrap.dedent("""
        import jax.numpy as jnp, numpy as np, gatednorm, gatednorm._dtypes as d
        assert not d._ml_loaded
        x = jnp.ones((2, 8), jnp.bfloat16); w = jnp.ones(8, jnp.bfloat16)
        y = gatednorm.rmsnorm_gated(x, None, w)           # out made like x (a DeviceArray)
        assert y.dtype.name == "bfloat16", y.dtype
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]



def test_residual_out_without_residual_is_refused():
    x, w = np.ones((2, 16), np.float32), np.ones(16, np.float32)
    ro = np.full((2, 16), np.nan, np.float32)
    with pytest.raises(gatednorm.InvalidArgumentError, match="^residual_out: given without a residual"):
        gatednorm.add_rmsnorm(x, None, w, residual_out=ro)
    assert np.isnan(ro).all()



def test_y_dtype_must_match_y_out():
    x, r, w = np.ones((2, 128), np.float32), np.ones((2, 128), np.float32), np.ones(128, np.float32)
    y = np.full((2, 128), np.nan, np.float32)
    with pytest.raises(gatednorm.InvalidArgumentError, match="y_dtype: float16 does not match y_out's dtype float32"):
        gatednorm.add_rmsnorm(x, r.copy(), w, y_dtype="float16", y_out=y)
    assert np.isnan(y).all()

def test_copy_dtype_must_match_y():
    x, w = np.ones((2, 128), np.float32), np.ones(128, np.float32)
    y = np.full((2, 128), np.nan, np.float32)
    with pytest.raises(gatednorm.InvalidArgumentError, match="copy_dtype: float16 does not match y's dtype float32"):
        gatednorm.rmsnorm_gated_fp8(x, None, w, copy_dtype="float16", y=y)



def test_plain_weight_with_gpu_activations_names_w():
    w = gatednorm.W4A16Weight.from_float(np.ones((8, 128), np.float32))
    a = DeviceArray.from_numpy(np.ones((2, 128), np.float32).astype(gatednorm._dtypes.bfloat16), device="cpu")
    a._devtype = _runtime.CUDA; a._t = None  # as test_adapters.fake_gpu
    with pytest.raises(gatednorm.InvalidArgumentError) as ei:
        gatednorm.w4a16_matmul(a, w)
    assert ei.value.message.startswith("w: a plain (host) weight, but a is on cuda:0"), ei.value.message


class _FailingFinaliser:
    """Its finaliser makes a failing library call of its own (as a pool handle's might)."""
    def __del__(self):
        try:
            gatednorm.rmsnorm_gated(np.ones((2, 3), np.float32), None, np.ones(5, np.float32))
        except GatedNormError:
            pass


class _OneShotProducer:
    """A DLPack producer handing out a fresh view per export, the capsule its only holder."""
    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kw):
        return from_pointer(self.a.ctypes.data, self.a.shape, self.a.dtype, device="cpu",
                            owner=_FailingFinaliser()).__dlpack__(**kw)

    def __dlpack_device__(self):
        return (1, 0)


def test_error_message_is_the_failed_calls_own():
    """The library's message of a failed call is read before the consumed DLPack tensors are
    released: a deleter (here a finaliser it triggers) that calls the library and fails put
    its own message, naming another argument, in the error (review)."""
    x, w = np.ones((4, 8), np.float32), np.ones(8, np.float32)
    with pytest.raises(GatedNormError, match=r"z: shape \[4, 9\] does not match x's \[4, 8\]"):
        gatednorm.rmsnorm_gated(x, _OneShotProducer(np.ones((4, 9), np.float32)), w)


@pytest.mark.parametrize("ptr", [3.9, 4096.0, "4096", b"4096", True, np.float64(4096.0), 4096 + 0j])
def test_from_pointer_refuses_what_is_no_address(ptr):
    """int() takes floats, strings and bools (3.9 became address 3, "4096" 4096, True stayed
    the view's pointer; review): refused naming ptr."""
    with pytest.raises(GatedNormError, match=r"^ptr: an address is an int"):
        from_pointer(ptr, (4,), "float32", device="cpu")


def test_from_pointer_takes_integers_and_int_like_objects():
    a = np.arange(4, dtype=np.float32)
    class Pointer:  # hip-python's Pointer: an object with __int__
        def __int__(self):
            return a.ctypes.data
    for ptr in (a.ctypes.data, np.int64(a.ctypes.data), np.uint64(a.ctypes.data), ctypes.c_void_p(a.ctypes.data), Pointer()):
        np.testing.assert_array_equal(from_pointer(ptr, (4,), "float32", device="cpu", owner=a).numpy(), a)


def test_torch_cpu_jagged_nested_tensor_refused_by_name():
    """A jagged nested tensor (layout=torch.jagged, a Python subclass whose shape holds a
    nested int j1) as any argument: refused by name as the strided-only tensors are.  It
    escaped as an AttributeError from torch's SymInt.__index__ (review); outputs untouched."""
    torch = pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nj = torch.nested.nested_tensor([torch.randn(2, 64), torch.randn(3, 64)], layout=torch.jagged)
    x, z, w = torch.randn(2, 5, 64), torch.randn(2, 5, 64), torch.randn(64)
    out = torch.full((2, 5, 64), 7.0)
    residual = torch.full((2, 5, 64), 7.0)
    cases = [("x", lambda: gatednorm.rmsnorm_gated(nj, None, w)),
             ("z", lambda: gatednorm.rmsnorm_gated(x, nj, w, out=out)),
             ("out", lambda: gatednorm.rmsnorm_gated(x, z, w, out=nj)),
             ("x", lambda: gatednorm.add_rmsnorm(nj, residual, w)),
             ("residual", lambda: gatednorm.add_rmsnorm(x, nj, w))]
    for name, call in cases:
        with pytest.raises(gatednorm.InvalidArgumentError, match=r"\b%s: a nested torch tensor" % name):
            call()
    assert bool((out == 7.0).all()) and bool((residual == 7.0).all()) and out._version == 0
