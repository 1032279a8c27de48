"""dtype mapping: numpy / ml_dtypes / torch / names  <->  DLPack (code, bits).

The codes are DLPack's DLDataTypeCode values, which gatednorm_dtype uses as-is.
Every standard numpy dtype is mapped (not only those the ops accept), so that an
unsupported dtype reaches the library and is rejected there with its own message.
"""

from __future__ import annotations

import sys

import numpy as np

# DLPack type codes (== GATEDNORM_DTYPE_CODE_* where the header defines them).
INT, UINT, FLOAT, OPAQUE_HANDLE, BFLOAT, COMPLEX, BOOL = 0, 1, 2, 3, 4, 5, 6
FLOAT8_E4M3FN, FLOAT8_E4M3FNUZ, FLOAT8_E8M0FNU = 10, 11, 14

# ml_dtypes (bfloat16, float8_*) is imported on first need only (it costs ~1 s of import
# time): a numpy array of those dtypes cannot exist before it is imported, so a lookup that
# misses on one of its dtypes (dl_lookup) or a name / attribute that needs it loads it.
_ML_NAMES = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e8m0fnu")
_ML_CODES = {"bfloat16": (BFLOAT, 16), "float8_e4m3fn": (FLOAT8_E4M3FN, 8),
             "float8_e4m3fnuz": (FLOAT8_E4M3FNUZ, 8), "float8_e8m0fnu": (FLOAT8_E8M0FNU, 8)}
_ml_loaded = False
float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
uint8 = np.dtype(np.uint8)
int32 = np.dtype(np.int32)

#: numpy dtype -> (DLPack code, bits)
NP_TO_DL: dict = {
    float16: (FLOAT, 16),
    float32: (FLOAT, 32),
    np.dtype(np.float64): (FLOAT, 64),
    np.dtype(np.int8): (INT, 8),
    np.dtype(np.int16): (INT, 16),
    int32: (INT, 32),
    np.dtype(np.int64): (INT, 64),
    uint8: (UINT, 8),
    np.dtype(np.uint16): (UINT, 16),
    np.dtype(np.uint32): (UINT, 32),
    np.dtype(np.uint64): (UINT, 64),
    np.dtype(np.bool_): (BOOL, 8),
    np.dtype(np.complex64): (COMPLEX, 64),
    np.dtype(np.complex128): (COMPLEX, 128),
}
# Byte-swapped (non-native) numpy dtypes are deliberately absent: they have no DLPack code.

#: (DLPack code, bits) -> numpy dtype
DL_TO_NP: dict = {v: k for k, v in NP_TO_DL.items()}

#: Short names accepted wherever a dtype is (out_dtype=..., DeviceArray(dtype=...)).
_NAMES = {
    "fp16": float16, "f16": float16, "half": float16, "float16": float16,
    "fp32": float32, "f32": float32, "float": float32, "float32": float32,
    "uint8": uint8, "int32": int32,
}
_ML_ALIASES = {
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp8_e4m3fn": "float8_e4m3fn", "float8_e4m3fn": "float8_e4m3fn", "e4m3fn": "float8_e4m3fn",
    "fp8_e4m3fnuz": "float8_e4m3fnuz", "float8_e4m3fnuz": "float8_e4m3fnuz", "e4m3fnuz": "float8_e4m3fnuz",
    "e8m0": "float8_e8m0fnu", "float8_e8m0fnu": "float8_e8m0fnu", "ue8m0": "float8_e8m0fnu",
}


def load_ml_dtypes() -> None:
    """Import ml_dtypes and add its dtypes to every table (once)."""
    global _ml_loaded
    if _ml_loaded:
        return
    import ml_dtypes

    g = globals()
    for name in _ML_NAMES:
        dt = np.dtype(getattr(ml_dtypes, name))
        g[name] = dt
        NP_TO_DL[dt] = _ML_CODES[name]
        DL_TO_NP[_ML_CODES[name]] = dt
    for alias, name in _ML_ALIASES.items():
        _NAMES[alias] = g[name]
    _ml_loaded = True


def __getattr__(name):  # bfloat16, float8_*: on first use
    if name in _ML_NAMES:
        load_ml_dtypes()
        return globals()[name]
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def _is_ml(dt) -> bool:
    t = getattr(dt, "type", None)
    return t is not None and (getattr(t, "__module__", "") or "").startswith("ml_dtypes")


def dl_lookup(dt):
    """NP_TO_DL.get(dt), loading ml_dtypes' entries when dt is one of its dtypes (the hot
    paths call this only on a miss)."""
    r = NP_TO_DL.get(dt)
    if r is None and not _ml_loaded and _is_ml(dt):
        load_ml_dtypes()
        r = NP_TO_DL.get(dt)
    return r


def np_of_dl(key, default=None):
    """DL_TO_NP.get(key, default), loading ml_dtypes for its (code, bits)."""
    if key in _ML_CODES.values():
        load_ml_dtypes()
    return DL_TO_NP.get(key, default)

_dtype_cache: dict = {}


def _torch_dtype_name(obj):
    """'bfloat16' for torch.bfloat16 etc., or None if obj is not a torch dtype."""
    t = sys.modules.get("torch")
    if t is not None and isinstance(obj, t.dtype):
        return str(obj).rpartition(".")[2]
    return None


def to_numpy_dtype(obj) -> np.dtype:
    """numpy dtype for a numpy/ml_dtypes dtype or type, a name ('bf16', 'float32', ...)
    or a torch dtype.  Raises TypeError for anything else."""
    try:
        return _dtype_cache[obj]
    except (KeyError, TypeError):
        pass
    name = _torch_dtype_name(obj)
    if name is not None:
        if name in _ML_ALIASES:
            load_ml_dtypes()
        dt = _NAMES.get(name) or np.dtype(name)
    elif isinstance(obj, str) and obj.lower() in _NAMES:
        dt = _NAMES[obj.lower()]
    elif isinstance(obj, str) and obj.lower() in _ML_ALIASES:
        load_ml_dtypes()
        dt = _NAMES[obj.lower()]
    else:
        dt = np.dtype(obj)
    try:
        _dtype_cache[obj] = dt
    except TypeError:  # unhashable
        pass
    return dt


def dl_dtype(obj) -> tuple:
    """(code, bits) of anything to_numpy_dtype() accepts."""
    dt = to_numpy_dtype(obj)
    r = dl_lookup(dt)
    if r is None:
        raise TypeError("dtype %s has no DLPack code" % dt)
    return r


def dl_to_numpy(code: int, bits: int) -> np.dtype:
    r = np_of_dl((code, bits))
    if r is None:
        raise TypeError("DLPack dtype (code=%d, bits=%d) has no numpy equivalent" % (code, bits))
    return r


def dl_name(code: int, bits: int) -> str:
    dt = np_of_dl((code, bits))
    return dt.name if dt is not None else "dlpack(code=%d,bits=%d)" % (code, bits)


_TORCH_NAMES = {
    "float32", "float16", "bfloat16", "float64", "float8_e4m3fn", "float8_e4m3fnuz",
    "float8_e8m0fnu", "uint8", "int8", "int16", "int32", "int64", "bool",
}


def torch_dtype_table(torch) -> dict:
    """torch.dtype -> (code, bits), for the dtypes this torch build has."""
    load_ml_dtypes()
    table = {}
    for name in _TORCH_NAMES:
        tdt = getattr(torch, name, None)
        if tdt is None:
            continue
        npdt = _NAMES.get(name) or np.dtype(name)
        table[tdt] = NP_TO_DL[npdt]
    return table


def to_torch_dtype(torch, dt: np.dtype):
    """torch dtype for a numpy dtype (used to allocate torch outputs)."""
    tdt = getattr(torch, dt.name, None)
    if tdt is None:
        raise TypeError("torch has no dtype %s" % dt.name)
    return tdt


def dtype_arg(dtype, name):
    """``to_numpy_dtype(dtype)``, or an InvalidArgumentError naming ``name``."""
    try:
        return to_numpy_dtype(dtype)
    except (TypeError, ValueError, SyntaxError):  # np.dtype(("f4", -1)): ValueError; np.dtype("f4,("): SyntaxError
        from ._ffi import argument_error

        raise argument_error("%s: not a dtype: %r" % (name, dtype)) from None
