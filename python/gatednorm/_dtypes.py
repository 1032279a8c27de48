"""dtype mapping: numpy / ml_dtypes / torch / names  <->  DLPack (code, bits).

The codes are DLPack's DLDataTypeCode values, which gatednorm_dtype uses as-is.
Every standard numpy dtype is mapped (not only those the ops accept), so that an
unsupported dtype reaches the library and is rejected there with its own message.
"""

from __future__ import annotations

import sys

import ml_dtypes
import numpy as np

# DLPack type codes (== GATEDNORM_DTYPE_CODE_* where the header defines them).
INT, UINT, FLOAT, OPAQUE_HANDLE, BFLOAT, COMPLEX, BOOL = 0, 1, 2, 3, 4, 5, 6
FLOAT8_E4M3FN, FLOAT8_E4M3FNUZ, FLOAT8_E8M0FNU = 10, 11, 14

bfloat16 = np.dtype(ml_dtypes.bfloat16)
float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float8_e4m3fn = np.dtype(ml_dtypes.float8_e4m3fn)
float8_e4m3fnuz = np.dtype(ml_dtypes.float8_e4m3fnuz)
float8_e8m0fnu = np.dtype(ml_dtypes.float8_e8m0fnu)
uint8 = np.dtype(np.uint8)
int32 = np.dtype(np.int32)

#: numpy dtype -> (DLPack code, bits)
NP_TO_DL: dict = {
    bfloat16: (BFLOAT, 16),
    float16: (FLOAT, 16),
    float32: (FLOAT, 32),
    np.dtype(np.float64): (FLOAT, 64),
    float8_e4m3fn: (FLOAT8_E4M3FN, 8),
    float8_e4m3fnuz: (FLOAT8_E4M3FNUZ, 8),
    float8_e8m0fnu: (FLOAT8_E8M0FNU, 8),
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
    "bf16": bfloat16, "bfloat16": bfloat16,
    "fp16": float16, "f16": float16, "half": float16, "float16": float16,
    "fp32": float32, "f32": float32, "float": float32, "float32": float32,
    "fp8_e4m3fn": float8_e4m3fn, "float8_e4m3fn": float8_e4m3fn, "e4m3fn": float8_e4m3fn,
    "fp8_e4m3fnuz": float8_e4m3fnuz, "float8_e4m3fnuz": float8_e4m3fnuz, "e4m3fnuz": float8_e4m3fnuz,
    "e8m0": float8_e8m0fnu, "float8_e8m0fnu": float8_e8m0fnu, "ue8m0": float8_e8m0fnu,
    "uint8": uint8, "int32": int32,
}

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
        dt = _NAMES.get(name) or np.dtype(name)
    elif isinstance(obj, str) and obj.lower() in _NAMES:
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
    try:
        return NP_TO_DL[dt]
    except KeyError:
        raise TypeError("dtype %s has no DLPack code" % dt) from None


def dl_to_numpy(code: int, bits: int) -> np.dtype:
    try:
        return DL_TO_NP[(code, bits)]
    except KeyError:
        raise TypeError("DLPack dtype (code=%d, bits=%d) has no numpy equivalent" % (code, bits)) from None


def dl_name(code: int, bits: int) -> str:
    dt = DL_TO_NP.get((code, bits))
    return dt.name if dt is not None else "dlpack(code=%d,bits=%d)" % (code, bits)


_TORCH_NAMES = {
    "float32", "float16", "bfloat16", "float64", "float8_e4m3fn", "float8_e4m3fnuz",
    "float8_e8m0fnu", "uint8", "int8", "int16", "int32", "int64", "bool",
}


def torch_dtype_table(torch) -> dict:
    """torch.dtype -> (code, bits), for the dtypes this torch build has."""
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
