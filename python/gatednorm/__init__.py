"""gatednorm: fused norm / quant kernels for hybrid-attention LLMs, from any array library.

    >>> import numpy as np, gatednorm
    >>> x = np.random.randn(4, 2, 128).astype(np.float32); z = np.random.randn(4, 2, 128).astype(np.float32)
    >>> y = gatednorm.rmsnorm_gated(x, z, np.ones(128, np.float32))
    >>> bool(gatednorm.reference.compare(y, gatednorm.reference.rmsnorm_gated(x, z, np.ones(128))))
    True

The library (libgatednorm, a plain C ABI) is loaded with cffi on first use: from
``$GATEDNORM_LIBRARY`` if set, else from this package's ``lib/`` folder.
"""

from __future__ import annotations

from pathlib import Path as _Path

from . import reference
from ._array import DeviceArray, from_pointer
from ._ffi import GatedNormError, InvalidArgumentError, LibraryLoadError
from ._runtime import (Stream, build_info, device_count, device_name, device_properties, get_num_threads, last_kernel,
                       set_num_threads, synchronize, version)
from .ops import rmsnorm_gated
from .ops_fp8 import NormOutputs, add_rmsnorm, group_quant_fp8, rmsnorm, rmsnorm_gated_fp8
from .w4a16 import W4A16Weight, w4a16_matmul
from .allreduce import AllReduceGroup

__all__ = [
    "rmsnorm_gated",
    "rmsnorm_gated_fp8",
    "W4A16Weight",
    "w4a16_matmul",
    "add_rmsnorm",
    "rmsnorm",
    "group_quant_fp8",
    "AllReduceGroup",
    "NormOutputs",
    "DeviceArray",
    "from_pointer",
    "GatedNormError",
    "InvalidArgumentError",
    "LibraryLoadError",
    "reference",
    "version",
    "build_info",
    "device_count",
    "device_name",
    "device_properties",
    "synchronize",
    "last_kernel",
    "set_num_threads",
    "get_num_threads",
    "Stream",
    "cmake_dir",
    "pkgconfig_dir",
    "wheel_build",
    "get_include",
    "get_library",
]

__version__ = "0.6.15"


def _pkg() -> _Path:
    from ._ffi import package_dir

    return package_dir()


def cmake_dir() -> str:
    """Folder holding gatednormConfig.cmake, for ``-Dgatednorm_DIR=...`` /
    ``CMAKE_PREFIX_PATH``: the package's ``lib/cmake/gatednorm``."""
    return str(_pkg() / "lib" / "cmake" / "gatednorm")


def pkgconfig_dir() -> str:
    """Folder holding gatednorm.pc, for ``PKG_CONFIG_PATH``: the package's ``lib/pkgconfig``."""
    return str(_pkg() / "lib" / "pkgconfig")


def wheel_build():
    """The GPU flavour a wheel was built with, from the ``gatednorm/_build.json`` CMake writes
    into it: ``{"gpu": "CUDA" | "HIP" | "OFF", "targets": "90a,100a" | "gfx942,..." | "",
    "version": ...}``; None where the package is not a wheel install (a source tree on
    GATEDNORM_LIBRARY)."""
    import json

    try:
        return json.loads((_pkg() / "_build.json").read_text())
    except (OSError, ValueError):
        return None


def get_include() -> str:
    """Folder holding gatednorm.h (the package's ``include``)."""
    return str(_pkg() / "include")


def get_library() -> str:
    """Path of the libgatednorm shared library this package loads."""
    from ._ffi import library_path

    return library_path()
