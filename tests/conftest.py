"""Shared fixtures for the gatednorm test-suite.

The suite tests the installed package (scripts/run_tests.sh installs it first); from a
source checkout without an install, ``<repo>/python`` is put on the path instead.  The
library is found the way users find it: $GATEDNORM_LIBRARY, else the copy inside the
installed package.  A missing library is an error, never a silent skip.

Backends: "cpu" (numpy arrays straight into the CPU backend) always runs; "cpu-devicearray"
runs the same cases through gatednorm.DeviceArray in host memory (the code path the GPU
uses, minus the GPU); "gpu" runs them through DeviceArray on GPU 0 and is skipped when the
library sees no GPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

# Before anything starts CUDA: the all-reduce tests run W ranks as W streams of one GPU whose
# kernels wait on each other; with fewer hardware queues than streams (CUDA's default is 8),
# one rank's second launch queued behind its own exchange could hold a peer's exchange back
# (docs/allreduce.md, "Co-residency").  Real ranks on separate GPUs do not share queues.
os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "32")
os.environ.setdefault("GPU_MAX_HW_QUEUES", "16")  # ROCm's own (default 4): comm_create refuses W > it
# A GPU exchange kernel whose peers never come waits this long before giving up (600 s by
# default): a test that hangs that way fails in 2 minutes, not 10.  The tests that time the
# give-up set their own in a subprocess.
os.environ.setdefault("GATEDNORM_COMM_TIMEOUT_S", "120")

try:
    import gatednorm  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import gatednorm  # noqa: F401

from gatednorm import _ffi
from gatednorm.testing import mirror


def pytest_report_header(config):
    try:
        _ffi.load()
        return "gatednorm: %s (%s); %d GPU(s); package %s" % (
            _ffi.library_path(), gatednorm.build_info(), gatednorm.device_count(), Path(gatednorm.__file__).parent)
    except Exception as e:  # reported again, as an error, by the session fixture
        return "gatednorm: library not loadable: %s" % e


@pytest.fixture(scope="session", autouse=True)
def _library_loaded():
    try:
        _ffi.load()
    except gatednorm.GatedNormError as e:
        pytest.exit("gatednorm tests need libgatednorm: %s (GATEDNORM_LIBRARY=%s)"
                    % (e, os.environ.get("GATEDNORM_LIBRARY")), returncode=3)


def gpu_count() -> int:
    try:
        return gatednorm.device_count()
    except Exception:
        return 0


BACKENDS = ["cpu", "cpu-devicearray", "gpu"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "gpu" and gpu_count() == 0:
        pytest.skip("no GPU visible to libgatednorm (%s)" % gatednorm.build_info())
    return request.param


@pytest.fixture
def requires_gpu():
    if gpu_count() == 0:
        pytest.skip("no GPU visible to libgatednorm")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a GPU (given to every test that takes requires_gpu)")


def pytest_collection_modifyitems(config, items):
    """A test that needs the GPU through `requires_gpu` has no backend parameter, so no "gpu"
    in its id: mark it "gpu", so that `-k "gpu and ..."` (gpu_check.sh's --pytest-k and
    --sanitize) selects it beside the backends' GPU cases.  Run 50's selection missed the FP8
    width A/B that way."""
    for item in items:
        if "requires_gpu" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gpu)


class Backend:
    """Moves numpy inputs to a backend with the same layout, and results back."""

    def __init__(self, name: str):
        self.name = name
        self._mirror = {"cpu": "numpy", "cpu-devicearray": "cpu", "gpu": "gpu:0"}[name]

    def put(self, view, base=None):
        """``view`` (a numpy array, possibly a strided view of ``base``) on this backend."""
        return None if view is None else mirror(view, base, self._mirror)

    @staticmethod
    def get(a) -> np.ndarray:
        return a if isinstance(a, np.ndarray) else a.numpy()

    @staticmethod
    def get_base(a, base) -> np.ndarray:
        """The whole buffer a strided output view lives in, as numpy."""
        return base if isinstance(a, np.ndarray) else a.base.numpy()


@pytest.fixture
def be(backend) -> Backend:
    return Backend(backend)


@pytest.fixture
def rng(request):
    # A per-test seed derived from the test id: reproducible, and different per case.
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
