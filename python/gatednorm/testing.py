"""Helpers shared by the test-suite and ``gatednorm check``: random inputs in a dtype,
strided views, NaN poisoning, and moving a (possibly strided) numpy view to a backend with
the same layout."""

from __future__ import annotations

import numpy as np

from . import _dtypes
from ._array import DeviceArray, from_pointer

__all__ = ["randn", "poison_value", "mirror", "to_numpy", "backend_device", "available_backends", "host_descriptor"]


def host_descriptor(ptr: int, shape, strides, code: int = 2, bits: int = 32):
    """A raw ``gatednorm_tensor *`` on the host (DLPack dtype ``code`` / ``bits``; strides in
    elements) at any address: descriptors no array library would build, for tests that hand
    the C ABI sizes, strides and pointers at its limits."""
    from ._ffi import ffi

    t = ffi.new("gatednorm_tensor *")
    t.data = ffi.cast("void *", ptr)
    t.device.device_type, t.device.device_id = 1, 0
    t.ndim = len(shape)
    t.dtype.code, t.dtype.bits, t.dtype.lanes = code, bits, 1
    for i, (n, st) in enumerate(zip(shape, strides)):
        t.shape[i], t.strides[i] = n, st
    return t


def randn(rng: np.random.Generator, shape, dtype, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Normal random values (x scale + shift) rounded to ``dtype`` (numpy, ml_dtypes)."""
    dt = _dtypes.to_numpy_dtype(dtype)
    return (rng.standard_normal(shape) * scale + shift).astype(np.float32).astype(dt)


def poison_value(dtype):
    """NaN in ``dtype`` (floats), else all-ones bits."""
    dt = _dtypes.to_numpy_dtype(dtype)
    if dt.kind == "f" or dt in (_dtypes.bfloat16,):
        return np.array(np.nan, np.float32).astype(dt)
    return np.array(-1).astype(dt)


def available_backends() -> list:
    """'cpu', then 'gpu:N' for every GPU the library sees."""
    from ._runtime import device_count

    return ["cpu"] + ["gpu:%d" % i for i in range(device_count())]


def backend_device(backend: str):
    return "cpu" if backend == "cpu" else backend


def mirror(view: np.ndarray, base: np.ndarray | None, backend: str):
    """``view`` on ``backend``: the numpy array itself for 'numpy'; else a DeviceArray copy
    of ``base`` (the buffer ``view`` is a view of; None: view itself) on the backend's device,
    and a DeviceArray view with ``view``'s offset and strides into it."""
    if backend == "numpy":
        return view
    if base is None:
        base = view
        while not base.flags.c_contiguous and isinstance(base.base, np.ndarray):
            base = base.base  # the array owning the memory the view lies in
    if not base.flags.c_contiguous:
        raise ValueError("mirror(): base must be C-contiguous")
    dev_base = DeviceArray.from_numpy(base, device=backend_device(backend))
    off = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    isz = view.dtype.itemsize
    if off < 0 or off >= max(base.nbytes, 1) and view.size:
        raise ValueError("view is not inside base")
    estrides = tuple(s // isz for s in view.strides)
    return from_pointer(dev_base.data_ptr + off, view.shape, view.dtype, strides=estrides,
                        device=(dev_base.device_type, dev_base.device_id), owner=dev_base)


def to_numpy(a) -> np.ndarray:
    """numpy copy of a numpy array or DeviceArray."""
    return a.numpy() if isinstance(a, DeviceArray) else np.asarray(a)
