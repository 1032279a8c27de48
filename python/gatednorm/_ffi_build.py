"""Writes ``gatednorm/_cffi_abi.py``: cffi's out-of-line ABI module for gatednorm.h, so that
the installed package does not parse the header on its first call (~60 ms).

Run by CMake at a wheel build, as a script (the package itself is not importable then):

    python _ffi_build.py path/to/gatednorm.h path/to/_cffi_abi.py

The module records the header's length and CRC-32; ``gatednorm._ffi`` uses it only when they
match the installed header (else it parses the header as a source checkout does).  Without
cffi in the build environment it writes nothing and says so (the package then parses).
"""

from __future__ import annotations

import os
import sys
import zlib

try:
    from ._cdef import cdef_from_header
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _cdef import cdef_from_header


def generate(header: str, out: str) -> bool:
    try:
        import cffi
    except ImportError:
        print("gatednorm: cffi is not in the build environment; %s not written (the header is parsed at run time)" % out)
        return False
    with open(header, "rb") as f:
        data = f.read()
    ffi = cffi.FFI()
    ffi.cdef(cdef_from_header(data.decode("utf-8")))
    ffi.set_source("gatednorm._cffi_abi", None)
    tmp = out + ".tmp"
    ffi.emit_python_code(tmp)
    with open(tmp, "a") as f:
        f.write("\n# The header this module was made from (gatednorm._ffi checks both).\n")
        f.write("HEADER_BYTES = %d\nHEADER_CRC32 = %d\n" % (len(data), zlib.crc32(data)))
    os.replace(tmp, out)
    return True


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: _ffi_build.py HEADER OUT")
    generate(sys.argv[1], sys.argv[2])
