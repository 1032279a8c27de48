"""Helpers shared by the test-suite and ``gatednorm check``: random inputs in a dtype,
strided views, NaN poisoning, and moving a (possibly strided) numpy view to a backend with
the same layout."""

from __future__ import annotations

import numpy as np

from . import _dtypes
from ._array import DeviceArray, from_pointer

__all__ = ["randn", "poison_value", "mirror", "to_numpy", "backend_device", "available_backends", "host_descriptor",
           "POISON_CODE", "POISON_VALUE", "POISON_E8M0", "poison_codes", "poison_scales", "new_scales", "scale_values",
           "fp8_scales_ok", "fp8_codes_ok", "in_threads"]


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


# ------------------------------------------------------------------------ FP8 outputs
# Outputs are poisoned before each run with values no correct result holds where it matters,
# finite ones: a NaN group or row left unwritten must not read as the NaN it should hold.
# Codes 0x35 (a finite code of both formats); scales 7.0 (no power of two: never a UE8M0
# scale), E8M0 byte 0x85 (2^6, far above any scale of these data); 16-bit / fp32 outputs 7.0.
POISON_CODE = 0x35
POISON_VALUE = 7.0
POISON_E8M0 = 0x85
_FP8_DT = {"e4m3fn": "float8_e4m3fn", "e4m3fnuz": "float8_e4m3fnuz"}


def poison_codes(shape, fmt):
    """FP8 codes of format ``fmt`` ("e4m3fn" / "e4m3fnuz"), all POISON_CODE."""
    return np.full(shape, POISON_CODE, np.uint8).view(getattr(_dtypes, _FP8_DT[fmt]))


def poison_scales(shape, scale_format):
    """A poisoned scales array of ``scale_format`` (fp32 / ue8m0: 7.0; E8M0 bytes: 0x85)."""
    if scale_format in ("fp32", "ue8m0"):
        return np.full(shape, POISON_VALUE, np.float32)
    if scale_format == "e8m0":
        return np.full(shape, POISON_E8M0, np.uint8)
    return np.full(shape, POISON_E8M0 * 0x01010101, np.uint32).view(np.int32)


def new_scales(tok, cols, scale_format, layout):
    """A poisoned scales output ``[tok..., cols]`` in a layout ("row", "col", "col_pad4"):
    (view, base)."""
    T = int(np.prod(tok)) if tok else 1
    if layout == "row":
        b = poison_scales(tuple(tok) + (cols,), scale_format)
        return b, b
    tp = (T + 3) // 4 * 4 if layout == "col_pad4" else T
    b = poison_scales((cols, tp), scale_format)
    return b.T[:T].reshape(tuple(tok) + (cols,)), b


def scale_values(s, scale_format, K):
    """float64 ``[T, K]`` scale values from an op's scales output (numpy; E8M0 0xff: NaN)."""
    s = np.asarray(s)
    if scale_format in ("fp32", "ue8m0"):
        return s.astype(np.float64)
    b = s.view(np.uint8) if scale_format == "e8m0" else np.ascontiguousarray(s).view(np.uint8).reshape(s.shape[:-1] + (-1,))[..., :K]
    v = np.exp2(b.astype(np.float64) - 127.0)
    return np.where(b == 0xFF, np.nan, v)


def fp8_scales_ok(got, ref, scale_format):
    """(ok, detail): scale values ``got`` against the float64 reference's: NaN exactly where
    it has NaN; fp32 within reference.compare's rule; UE8M0 / E8M0 exactly 2^ceil(log2 ref),
    either neighbour only where ref lies within fp32 error of a power of two."""
    from . import reference

    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return False, "scales of shape %s, expected %s" % (got.shape, ref.shape)
    nan = np.isnan(ref)
    if not np.array_equal(np.isnan(got), nan):
        return False, "NaN scales where the reference has none (or missing)"
    g, r = got[~nan], ref[~nan]
    if scale_format == "fp32":
        cmp = reference.compare(g, r, np.float32)
        return bool(cmp.ok), repr(cmp)
    up = np.exp2(np.ceil(np.log2(r)))
    near = np.abs(np.log2(r) - np.round(np.log2(r))) < 3e-5
    ok = (g == up) | (near & ((g == up / 2) | (g == up * 2)))
    return bool(ok.all()), ("powers of two as the reference" if ok.all() else "scales %s != %s" % (g[~ok][:4], up[~ok][:4]))


def fp8_codes_ok(q, y_ref, s_got, fmt, fp8_max, G):
    """(ok, detail): FP8 codes ``q`` (ml_dtypes array ``[T, K * G]``) within half a quantum of
    clamp(y_ref / s) with the op's own scales ``s_got`` ``[T, K]`` (one quantum apart only on
    a rounding boundary); NaN codes exactly in the NaN-scale groups."""
    from . import reference

    T_K = s_got.shape
    qg = np.asarray(q).astype(np.float64).reshape(T_K + (G,))
    yg = np.asarray(y_ref, np.float64).reshape(T_K + (G,))
    nan = np.isnan(s_got)
    if not np.isnan(qg[nan]).all():
        return False, "a NaN group's codes must be NaN"
    fmax = reference.fp8_max_of(fmt, fp8_max)
    with np.errstate(invalid="ignore"):
        target = np.clip(yg / s_got[..., None], -fmax, fmax)
    cmp = reference.compare(qg[~nan], target[~nan], getattr(_dtypes, _FP8_DT[fmt]))
    return bool(cmp.ok), repr(cmp)


def in_threads(n, body, timeout=60.0):
    """body(i) on n threads at once (all-reduce ranks of one process, whose calls wait for
    their peers); re-raises the first exception any of them raised, and raises TimeoutError
    naming the threads still running after ``timeout`` seconds (a rank left waiting is what an
    out-of-step bug looks like; they are daemon threads, so the interpreter can still exit)."""
    import threading

    errs = []

    def guarded(i):
        try:
            body(i)
        except BaseException as e:  # re-raised below
            errs.append((i, e))

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    if errs:
        raise errs[0][1]
    if hung:
        raise TimeoutError("in_threads: thread(s) %s still running after %g s" % (hung, timeout))
