"""The cffi binding: the cdef comes from gatednorm.h itself; library lookup; errors;
version/info helpers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gatednorm
from gatednorm import GatedNormError, _ffi


def header_text() -> str:
    return _ffi.header_path().read_text()


def test_cdef_from_real_header():
    cdef = _ffi.cdef_from_header(header_text())
    for line in cdef.splitlines():
        if line.lstrip().startswith("#"):
            assert re.fullmatch(r"#define [A-Z_0-9]+ -?(0x[0-9a-fA-F]+|\d+)", line.strip()), line
    assert "GATEDNORM_API" not in cdef and "extern" not in cdef and "__cplusplus" not in cdef
    assert "/*" not in cdef


def test_every_prototype_is_bound():
    lib = _ffi.lib()
    text = header_text()
    names = re.findall(r"^GATEDNORM_API\b[^(]*?\b(gatednorm_\w+)\s*\(", text, re.M)
    assert len(names) >= 15 and "gatednorm_rmsnorm_gated" in names
    for n in names:
        assert callable(getattr(lib, n)), n
    # every integer #define of the header is a constant of the binding
    for name, value in re.findall(r"^#define (GATEDNORM_\w+) (\d+)\s*$", text, re.M):
        assert getattr(lib, name) == int(value)
    # the descriptor has DLPack's layout with inline shape/strides
    assert _ffi.ffi.sizeof("gatednorm_tensor") == 8 + 8 + 4 + 4 + 2 * 8 * lib.GATEDNORM_MAX_DIMS + 8


def test_cdef_preprocessor_rules():
    text = r"""
#ifndef X_H
#define X_H
#include <stdint.h>
#if defined(_WIN32)
#  define X_API __declspec(dllexport)
#else
#  define X_API
#endif
#ifdef __cplusplus
extern "C" {
#  if 1
int not_c(void);
#  endif
#endif
#define X_ONE 1
#define X_HEX 0x10u
#define X_NEG (-3)
#define X_STR "text"
#define X_MULTI \
   (1 + 2)
/* #define X_COMMENTED 5 */
typedef struct { int32_t a[X_ONE]; } x_t; // trailing comment
GATEDNORM_API int x_fn(const x_t *p);
#ifdef __cplusplus
}
#endif
#endif
"""
    cdef = _ffi.cdef_from_header(text)
    lines = [l.strip() for l in cdef.splitlines() if l.strip()]
    assert "#define X_ONE 1" in lines and "#define X_HEX 0x10" in lines and "#define X_NEG -3" in lines
    for k in ("X_STR", "X_MULTI", "X_COMMENTED", "X_API", "not_c", "extern", "#include", "X_H", "GATEDNORM_API",
              "comment"):
        assert not re.search(r"%s\b" % k, cdef), k
    assert "int x_fn(const x_t *p);" in cdef.replace("  ", " ").replace(" int", "int")
    import cffi

    f = cffi.FFI()
    f.cdef(cdef)  # valid cffi input
    assert f.sizeof("x_t") == 4


def test_header_lookup_prefers_installed(monkeypatch, tmp_path):
    pkg = tmp_path / "gatednorm"
    (pkg / "include").mkdir(parents=True)
    (pkg / "include" / "gatednorm.h").write_text("/* installed */")
    monkeypatch.setattr(_ffi, "package_dir", lambda: pkg)
    assert _ffi.header_path() == pkg / "include" / "gatednorm.h"


def test_library_lookup(monkeypatch, tmp_path):
    pkg = tmp_path / "gatednorm"
    (pkg / "lib").mkdir(parents=True)
    monkeypatch.setattr(_ffi, "package_dir", lambda: pkg)
    monkeypatch.delenv("GATEDNORM_LIBRARY", raising=False)
    with pytest.raises(GatedNormError) as ei:
        _ffi.library_path()
    assert "GATEDNORM_LIBRARY" in ei.value.message
    for n in ("libgatednorm.so.0.4.0", "libgatednorm.so.0", "libgatednorm.so"):
        (pkg / "lib" / n).write_text("")
    assert _ffi.library_path() == str(pkg / "lib" / "libgatednorm.so")
    monkeypatch.setenv("GATEDNORM_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(GatedNormError) as ei:
        _ffi.library_path()
    assert "nope.so" in ei.value.message


def _subprocess(code: str, env_update: dict):
    env = dict(os.environ, **env_update)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(gatednorm.__file__).parents[1])] + sys.path)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_import_is_lazy_and_missing_library_is_clear():
    code = ("import gatednorm, numpy as np\n"
            "print('imported')\n"
            "print(gatednorm.cmake_dir())\n"
            "try:\n"
            "    gatednorm.rmsnorm_gated(np.zeros((1, 4), np.float32), None, np.ones(4, np.float32))\n"
            "except gatednorm.GatedNormError as e:\n"
            "    print('ERR', e)\n")
    r = _subprocess(code, {"GATEDNORM_LIBRARY": "/nonexistent/libgatednorm.so"})
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout and "ERR" in r.stdout and "/nonexistent/libgatednorm.so" in r.stdout


def test_error_carries_library_message():
    lib = _ffi.lib()
    buf = _ffi.ffi.new("char[]", 64)
    st = lib.gatednorm_device_name(12345, buf, 64)
    assert st < 0
    with pytest.raises(GatedNormError) as ei:
        _ffi.check(st, "gatednorm_device_name")
    e = ei.value
    assert e.status == st and e.message == _ffi.ffi.string(lib.gatednorm_last_error()).decode()
    assert e.message and e.status_name == _ffi.ffi.string(lib.gatednorm_status_string(st)).decode()
    assert "gatednorm_device_name" in str(e)
    _ffi.check(0)  # success: no exception


def test_device_name_names_the_argument_at_fault():
    """A zero capacity was reported as "name: must not be NULL" with a name buffer given."""
    lib = _ffi.lib()
    buf = _ffi.ffi.new("char[]", 8)
    assert lib.gatednorm_device_name(0, buf, 0) == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert _ffi.ffi.string(lib.gatednorm_last_error()).decode().startswith("capacity:")
    assert lib.gatednorm_device_name(0, _ffi.ffi.NULL, 8) == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert _ffi.ffi.string(lib.gatednorm_last_error()).decode().startswith("name:")


def test_op_error_is_gatednorm_error_with_status():
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(np.zeros((2, 3, 4), np.float32), None, np.ones(5, np.float32))
    assert ei.value.status == _ffi.lib().GATEDNORM_STATUS_INVALID_ARGUMENT
    assert isinstance(ei.value, Exception)


def test_version_and_info():
    lib = _ffi.lib()
    v = gatednorm.version()
    assert v == "%d.%d.%d" % (lib.GATEDNORM_VERSION_MAJOR, lib.GATEDNORM_VERSION_MINOR, lib.GATEDNORM_VERSION_PATCH)
    info = gatednorm.build_info()
    assert info.startswith("gatednorm " + v) and "cpu" in info
    n = gatednorm.device_count()
    assert isinstance(n, int) and n >= 0
    for i in range(n):
        assert gatednorm.device_name(i)


def test_versions_agree():
    """One version in four places (CMake's project(), the header's macros, pyproject.toml, the
    package's __version__): the loader compares the library's with the header's, so a bump
    in one and not the others would refuse or mislabel a build."""
    root = Path(__file__).resolve().parents[1]
    cmake = re.search(r"project\(gatednorm VERSION (\d+\.\d+\.\d+)", (root / "CMakeLists.txt").read_text()).group(1)
    hdr = (root / "pybind_free_api" / "include" / "gatednorm.h").read_text()
    macros = ".".join(re.search(r"#define GATEDNORM_VERSION_%s (\d+)" % k, hdr).group(1) for k in ("MAJOR", "MINOR", "PATCH"))
    proj = re.search(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M).group(1)
    assert cmake == macros == proj == gatednorm.__version__, (cmake, macros, proj, gatednorm.__version__)
    assert gatednorm.version() == cmake  # the library loaded here was built from this tree


def test_device_attribute():
    """Each attribute of each visible GPU is plausible (NVIDIA: warp 32; AMD: 32 or 64);
    a bad attribute, device or NULL value is refused naming the argument, writing nothing."""
    lib = _ffi.lib()
    v = _ffi.ffi.new("int64_t *", -7)
    for attr, name in [(0, "attribute"), (4, "attribute"), (-1, "attribute")]:
        assert lib.gatednorm_device_attribute(0, attr, v) == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
        assert _ffi.ffi.string(lib.gatednorm_last_error()).decode().startswith(name + ":") and v[0] == -7
    assert lib.gatednorm_device_attribute(0, 1, _ffi.ffi.NULL) == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert _ffi.ffi.string(lib.gatednorm_last_error()).decode().startswith("value:")
    n = gatednorm.device_count()
    assert lib.gatednorm_device_attribute(n, 1, v) == lib.GATEDNORM_STATUS_NO_DEVICE and v[0] == -7
    assert _ffi.ffi.string(lib.gatednorm_last_error()).decode().startswith("device_id:")
    for i in range(n):
        p = gatednorm.device_properties(i)
        assert p["name"] == gatednorm.device_name(i)
        assert 1 <= p["multiprocessors"] <= 4096
        assert p["warp_size"] in ((32,) if gatednorm._runtime.gpu_device_type() == 2 else (32, 64))
        assert p["l2_bytes"] >= 2**20
    if n == 0:
        with pytest.raises(GatedNormError, match="device_id"):
            gatednorm.device_properties(0)


def test_package_paths():
    pkg = Path(gatednorm.__file__).parent
    assert Path(gatednorm.cmake_dir()) == pkg / "lib" / "cmake" / "gatednorm"
    assert Path(gatednorm.get_include()) == pkg / "include"
    if (pkg / "include" / "gatednorm.h").exists():  # installed package: the header ships with it
        assert _ffi.header_path() == pkg / "include" / "gatednorm.h"
        assert (Path(gatednorm.cmake_dir()) / "gatednormConfig.cmake").exists()


def _init_params(size, slot=None, fill=0xAB):
    """Calls params_init on a byte slot of `slot` bytes (default size + 16) filled with
    `fill`; returns (status, message, the slot's bytes)."""
    ffi, lib = _ffi.ffi, _ffi.lib()
    buf = ffi.new("unsigned char[]", slot if slot is not None else size + 16)
    ffi.memmove(buf, bytes([fill]) * len(buf), len(buf))
    st = lib.gatednorm_rmsnorm_gated_params_init(ffi.cast("gatednorm_rmsnorm_gated_params *", buf), size)
    return st, ffi.string(lib.gatednorm_last_error()).decode(), bytes(ffi.buffer(buf))


def test_params_init_fills_defaults_through_the_pointer():
    ffi = _ffi.ffi
    size = ffi.sizeof("gatednorm_rmsnorm_gated_params")
    st, msg, raw = _init_params(size)
    assert st == 0, msg
    p = ffi.new("gatednorm_rmsnorm_gated_params *")
    ffi.memmove(p, raw[:size], size)
    assert p.struct_size == size
    assert p.norm_before_gate == 1 and p.activation == 0 and p.group_size == 0 and p.pdl == 0
    assert p.eps == pytest.approx(1e-6) and p.weight_offset == 0.0
    assert raw[size:] == bytes([0xAB]) * 16  # nothing past the caller's size


def test_params_init_of_the_first_layout_writes_only_its_bytes():
    """Regression: the old by-value _default() wrote 40 bytes into a 32-byte caller's slot."""
    v1 = _ffi.lib().GATEDNORM_RMSNORM_GATED_PARAMS_V1_SIZE
    st, msg, raw = _init_params(v1)
    assert st == 0, msg
    assert int.from_bytes(raw[:4], "little") == v1
    assert raw[v1:] == bytes([0xAB]) * 16


@pytest.mark.parametrize("size", [0, 4, 31, 33, 39, 5000])
def test_params_init_refuses_unknown_sizes_and_writes_nothing(size):
    st, msg, raw = _init_params(size, slot=64)
    assert st == _ffi.lib().GATEDNORM_STATUS_INVALID_ARGUMENT and msg.startswith("params:"), msg
    assert raw == bytes([0xAB]) * 64


def test_params_init_of_a_newer_caller_zeroes_the_fields_it_does_not_know():
    ffi = _ffi.ffi
    size = ffi.sizeof("gatednorm_rmsnorm_gated_params")
    st, msg, raw = _init_params(size + 8)
    assert st == 0, msg
    assert int.from_bytes(raw[:4], "little") == size + 8
    assert raw[size:size + 8] == bytes(8) and raw[size + 8:] == bytes([0xAB]) * 16


def test_params_init_null():
    lib = _ffi.lib()
    st = lib.gatednorm_rmsnorm_gated_params_init(_ffi.ffi.NULL, 40)
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert _ffi.ffi.string(lib.gatednorm_last_error()).decode().startswith("params:")


def test_pointer_device_of_host_memory():
    from gatednorm._runtime import pointer_device

    a = np.zeros(16, np.float32)
    assert pointer_device(a.ctypes.data) == (1, 0)


def test_installed_binding_is_prebuilt_when_its_module_is_there():
    """A wheel carries gatednorm/_cffi_abi.py (cffi's out-of-line ABI module of the header,
    python/gatednorm/_ffi_build.py): when it is there and matches the header, nothing parses
    the header at run time; a module made from another header is not used."""
    import zlib

    mod = _ffi.package_dir() / "_cffi_abi.py"
    if not mod.exists():
        pytest.skip("no prebuilt binding module (a source checkout, or cffi missing at build time)")
    data = _ffi.header_path().read_bytes()
    from gatednorm import _cffi_abi

    assert (_cffi_abi.HEADER_BYTES, _cffi_abi.HEADER_CRC32) == (len(data), zlib.crc32(data))
    assert _ffi.PREBUILT and _ffi.ffi is _cffi_abi.ffi


@pytest.mark.parametrize("kind", ["missing", "not_elf", "other_library"])
def test_load_failures_say_the_library_did_not_load(kind, tmp_path):
    """Each way the library fails to load raises LibraryLoadError naming the path, labelled
    as a load failure (it read "[no device]"), never a raw cffi / OSError traceback."""
    path = {"missing": tmp_path / "nope.so", "not_elf": tmp_path / "libgatednorm.so"}.get(kind)
    if kind == "not_elf":
        path.write_text("not an ELF file")
    if kind == "other_library":
        import ctypes.util

        libm = ctypes.util.find_library("m")
        if libm is None:
            pytest.skip("no libm to load on this platform")
        path = libm
    code = ("import gatednorm, numpy as np, pickle\n"
            "try:\n"
            "    gatednorm.rmsnorm_gated(np.ones((1, 4), np.float32), None, np.ones(4, np.float32))\n"
            "except gatednorm.LibraryLoadError as e:\n"
            "    e2 = pickle.loads(pickle.dumps(e))\n"
            "    assert type(e2) is gatednorm.LibraryLoadError and str(e2) == str(e), (e2, e)\n"
            "    print('ERR', e)\n")
    r = _subprocess(code, {"GATEDNORM_LIBRARY": str(path)})
    assert r.returncode == 0, r.stderr
    assert "ERR " in r.stdout and str(path) in r.stdout and "[library not loaded]" in r.stdout, r.stdout
    assert "[no device]" not in r.stdout


def test_library_exports_only_the_c_abi():
    """The shared library's dynamic symbol table holds gatednorm_* only (cmake/gatednorm.map):
    a weak std::vector instance was exported, which a consumer's copy could be bound to."""
    import shutil

    nm = shutil.which("nm")
    path = _ffi.library_path()
    if nm is None or not sys.platform.startswith("linux"):
        pytest.skip("needs binutils' nm on an ELF platform")
    r = subprocess.run([nm, "-D", "--defined-only", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    names = [line.split()[-1] for line in r.stdout.splitlines() if line.strip()]
    exported = sorted(n for n in names if not n.startswith("gatednorm_"))
    assert exported == [], exported[:10]
    declared = set(re.findall(r"^GATEDNORM_API\b[^(]*?\b(gatednorm_\w+)\s*\(", header_text(), re.M))
    assert declared == set(names)
