"""A numpy stand-in for the slice of PyTorch that ``gatednorm.bench`` calls, so that the
bench's GPU code path (ceilings, graph timing, rotation, peers, the retuned-FLA bookkeeping,
host-call rows) runs on a machine without a GPU (tests/fake_gpu/run_bench.py).

"cuda" tensors live in host memory; the driver maps gatednorm's CUDA device to its CPU
backend.  Graph replays do nothing and events read the host clock, so its timings mean
nothing.  Where real torch refuses something the bench might do by mistake, this refuses it
too: ``.numpy()`` of a cuda or bf16 tensor, ``torch.from_numpy`` of an ml_dtypes array,
``.view(shape)`` that would need a copy, ``.view(dtype)`` of another width.
"""
from __future__ import annotations

import builtins
import contextlib
import time
import types

import ml_dtypes
import numpy as np

__version__ = "0.0-fake"


class dtype:
    def __init__(self, name, np_dtype):
        self.name, self.np = name, np.dtype(np_dtype)
        self.is_floating_point = self.np.kind == "f" or name.startswith(("bfloat", "float"))
        self.itemsize = self.np.itemsize

    def __repr__(self):
        return "torch." + self.name

    __str__ = __repr__


float32 = dtype("float32", np.float32)
float16 = dtype("float16", np.float16)
bfloat16 = dtype("bfloat16", ml_dtypes.bfloat16)
float64 = dtype("float64", np.float64)
float8_e4m3fn = dtype("float8_e4m3fn", ml_dtypes.float8_e4m3fn)
uint8 = dtype("uint8", np.uint8)
int8 = dtype("int8", np.int8)
int16 = dtype("int16", np.int16)
int32 = dtype("int32", np.int32)
int64 = dtype("int64", np.int64)
bool = dtype("bool", np.bool_)  # noqa: A001 - torch's name
_BY_NP = {d.np: d for d in (float32, float16, bfloat16, float64, float8_e4m3fn, uint8, int8, int16, int32, int64, bool)}


class device:
    def __init__(self, type, index=None):  # noqa: A002 - torch's name
        if isinstance(type, device):
            type, index = type.type, type.index
        elif ":" in str(type):
            type, index = str(type).split(":")
            index = int(index)
        self.type, self.index = str(type), (index if index is not None or type == "cpu" else 0)

    def __eq__(self, other):
        other = device(other)
        return (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __repr__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"


_CPU = device("cpu")
version = types.SimpleNamespace(cuda="12.0", hip=None)
# No _cuda_getCurrentRawStream: gatednorm asks torch.cuda.current_stream.  No autograd: grad
# mode is never on, so gatednorm's output rule (docs/frameworks.md) has nothing to check.
_C = types.SimpleNamespace(is_grad_enabled=lambda: False, _increment_version=lambda t: None)


def _dev(d):
    return _CPU if d is None else device(d)


def _np_of(v):
    return v._a if isinstance(v, Tensor) else v


def _result_dtype(*vals):
    """bf16 op python float -> bf16; bf16 op fp32 tensor -> fp32 (wider float wins)."""
    ts = [v.dtype for v in vals if isinstance(v, Tensor)]
    return max(ts, key=lambda d: (d.is_floating_point, d.itemsize, d is not bfloat16))


def _compute(fn, *vals):
    out_dt = _result_dtype(*vals)
    work = [(_np_of(v).astype(np.float32) if isinstance(v, Tensor) and v.dtype.np.kind not in "fiub" else _np_of(v))
            for v in vals]
    work = [w.astype(np.float32) if isinstance(w, np.ndarray) and w.dtype == np.float16 else w for w in work]
    dev = next(v.device for v in vals if isinstance(v, Tensor))
    return Tensor(np.asarray(fn(*work)).astype(out_dt.np), dev)


class Size(tuple):
    pass


class Tensor:
    def __init__(self, a, dev=_CPU):
        self._a = a if isinstance(a, np.ndarray) else np.asarray(a)
        self._dev = _dev(dev)

    # -- metadata
    @property
    def shape(self):
        return Size(int(n) for n in self._a.shape)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    @property
    def dtype(self):
        return _BY_NP[self._a.dtype]

    @property
    def device(self):
        return self._dev

    @property
    def is_cuda(self):
        return self._dev.type == "cuda"

    @property
    def is_cpu(self):
        return self._dev.type == "cpu"

    def get_device(self):
        return self._dev.index if self.is_cuda else -1

    def dim(self):
        return self._a.ndim

    def numel(self):
        return int(self._a.size)

    def stride(self):
        return tuple(int(s) // self._a.itemsize for s in self._a.strides)

    def data_ptr(self):
        return int(self._a.__array_interface__["data"][0])

    def is_contiguous(self):
        return builtins.bool(self._a.flags.c_contiguous)

    def is_neg(self):  # no lazy negation here
        return False

    def __repr__(self):
        return f"FakeTensor({self.shape}, {self.dtype}, {self._dev})"

    # -- conversion
    def to(self, *args, dtype=None, device=None):
        for a in args:
            if isinstance(a, globals()["dtype"]):
                dtype = a
            else:
                device = a
        t = self
        if dtype is not None and dtype is not self.dtype:
            t = Tensor(self._a.astype(np.float32).astype(dtype.np) if self.dtype.np.kind == "V" else self._a.astype(dtype.np),
                       self._dev)
        if device is not None and _dev(device) != self._dev:
            t = Tensor(t._a.copy(), _dev(device))
        return t

    def float(self):
        return self.to(float32)

    def cpu(self):
        return self if self.is_cpu else Tensor(self._a.copy(), _CPU)

    def numpy(self):
        if self.is_cuda:
            raise TypeError(f"can't convert {self._dev} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first.")
        if self.dtype.np.kind == "V":
            raise TypeError(f"Got unsupported ScalarType {self.dtype.name}")
        return self._a

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return Tensor(self._a.reshape(shape), self._dev)

    def view(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], dtype):
            dt = shape[0]
            if dt.itemsize != self._a.itemsize:
                raise RuntimeError("view(dtype): the fake only reinterprets dtypes of the same width")
            return Tensor(self._a.view(dt.np), self._dev)
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        v = self._a.view()
        try:
            v.shape = shape
        except AttributeError:
            raise RuntimeError("view size is not compatible with input tensor's size and stride; use .reshape(...)") from None
        return Tensor(v, self._dev)

    def element_size(self):
        return self._a.itemsize

    def t(self):
        if self._a.ndim != 2:
            raise RuntimeError("t() expects a tensor with <= 2 dimensions")
        return Tensor(self._a.T, self._dev)

    T = property(t)

    def clone(self):
        return Tensor(self._a.copy(), self._dev)

    def copy_(self, src):
        self._a[...] = src._a
        return self

    def contiguous(self):
        return Tensor(np.ascontiguousarray(self._a), self._dev)

    def new_empty(self, shape, dtype=None):
        return Tensor(np.empty(tuple(shape), (dtype or self.dtype).np), self._dev)

    def index_select(self, dim, index):
        return Tensor(np.take(self._a, _np_of(index), axis=dim), self._dev)

    def fill_(self, value):
        self._a[...] = np.asarray(value, np.float32).astype(self._a.dtype)
        return self

    def __getitem__(self, key):
        return Tensor(self._a[key], self._dev)

    # -- math (float32 inside, the result in torch's promoted dtype)
    def pow(self, e):
        return _compute(lambda a: a ** e, self)

    def mean(self, dim, keepdim=False):
        return _compute(lambda a: a.mean(dim, keepdims=keepdim), self)

    def abs(self):
        return _compute(np.abs, self)

    def amax(self, dim, keepdim=False):
        return _compute(lambda a: a.max(dim, keepdims=keepdim), self)

    def clamp(self, min=None, max=None):  # noqa: A002 - torch's names
        return _compute(lambda a: np.clip(a, min, max), self)

    def repeat_interleave(self, n, dim):
        return Tensor(np.repeat(self._a, n, axis=dim), self._dev)

    def any(self):
        return Tensor(np.asarray(builtins.bool(self._a.any())), self._dev)

    def __bool__(self):
        return builtins.bool(self._a)

    def __add__(self, o):
        return _compute(np.add, self, o)

    def __radd__(self, o):
        return _compute(np.add, o, self)

    def __sub__(self, o):
        return _compute(np.subtract, self, o)

    def __mul__(self, o):
        return _compute(np.multiply, self, o)

    def __rmul__(self, o):
        return _compute(np.multiply, o, self)

    def __truediv__(self, o):
        return _compute(np.divide, self, o)

    def __neg__(self):
        return _compute(np.negative, self)

    def __eq__(self, o):
        return Tensor(np.equal(self._a, _np_of(o)), self._dev)

    __hash__ = object.__hash__

    def item(self):
        return self._a.item()


# ------------------------------------------------------------------------ factories
class Generator:
    def __init__(self, device=None):
        self._rng = np.random.default_rng(0)

    def manual_seed(self, seed):
        self._rng = np.random.default_rng(seed)
        return self


def _size(size):
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def randn(*size, device=None, dtype=None, generator=None):
    rng = generator._rng if generator is not None else np.random.default_rng()
    return Tensor(rng.standard_normal(_size(size), dtype=np.float32).astype((dtype or float32).np), _dev(device))


def full(size, fill_value, device=None, dtype=None):
    return Tensor(np.full(tuple(size), fill_value, np.float32).astype((dtype or float32).np), _dev(device))


def empty(*size, device=None, dtype=None):
    return Tensor(np.empty(_size(size), (dtype or float32).np), _dev(device))


def empty_like(t):
    return Tensor(np.empty_like(t._a), t.device)


def as_tensor(data, device=None):
    return Tensor(np.asarray(data), _dev(device))


def from_numpy(a):
    if a.dtype not in _BY_NP or a.dtype.isbuiltin != 1:
        raise TypeError(f"can't convert np.ndarray of type {a.dtype}")
    return Tensor(a, _CPU)


def from_dlpack(obj):
    """A copy as a "cuda" tensor (what the probes hand it are gatednorm DeviceArrays on the GPU)."""
    a = obj.numpy() if hasattr(obj, "numpy") else np.from_dlpack(obj)
    return Tensor(np.array(a), device("cuda", 0))


def _out(res, out):
    if out is None:
        return res
    out._a[...] = res._a.astype(np.float32).astype(out._a.dtype) if res._a.dtype.kind == "V" else res._a.astype(out._a.dtype)
    return out


def add(a, b, out=None):
    return _out(_compute(np.add, a, b), out)


def neg(a, out=None):
    return _out(_compute(np.negative, a), out)


def matmul(a, b):
    return _compute(np.matmul, a, b)


def rsqrt(t):
    return _compute(lambda a: 1.0 / np.sqrt(a), t)


def equal(a, b):
    return builtins.bool(a._a.shape == b._a.shape and np.array_equal(a._a, b._a))


def isnan(t):
    return Tensor(np.isnan(t._a.astype(np.float32)), t.device)


def compile(fn, dynamic=None, **kw):  # noqa: A001 - torch's name
    return fn


@contextlib.contextmanager
def inference_mode(mode=True):
    yield


nn = types.SimpleNamespace(functional=types.SimpleNamespace(
    silu=lambda t: _compute(lambda a: a / (1.0 + np.exp(-a)), t)))


# ------------------------------------------------------------------------------ cuda
class _Stream:
    def __init__(self, device=None, handle=0):
        self.cuda_stream = handle

    def wait_stream(self, other):
        pass

    def synchronize(self):
        pass


class _Event:
    def __init__(self, enable_timing=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return max((end.t - self.t) * 1e3, 1e-6)  # ms, and never 0 (replays do nothing here)


class _Graph:
    def replay(self):
        pass


_default_stream = _Stream()
_stream_stack = [_default_stream]


@contextlib.contextmanager
def _stream_ctx(s):
    _stream_stack.append(s)
    try:
        yield
    finally:
        _stream_stack.pop()


@contextlib.contextmanager
def _graph(g, stream=None, **kw):
    with _stream_ctx(stream or _Stream(handle=0)):
        yield


cuda = types.SimpleNamespace(
    is_available=lambda: True,
    device_count=lambda: 1,
    current_device=lambda: 0,
    get_device_properties=lambda d=None: types.SimpleNamespace(
        name="fake GPU (numpy stand-in)", L2_cache_size=1 << 20, multi_processor_count=4, clock_rate=1_000_000),
    synchronize=lambda device=None: None,
    empty_cache=lambda: None,
    Event=_Event,
    Stream=_Stream,
    current_stream=lambda device=None: _stream_stack[-1],
    stream=_stream_ctx,
    CUDAGraph=_Graph,
    graph=_graph,
    _sleep=lambda cycles: None,
)
