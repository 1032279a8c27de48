"""``gatednorm bench`` on its GPU code path without a GPU: the torch and fla stand-ins in this
folder shadow the real packages (this folder first on PYTHONPATH), gatednorm's CUDA device is
mapped onto its CPU backend, and the harness's sizes shrink to test sizes.  Its timings mean
nothing; what it shows is that every step of a GPU run executes and checks its results.

    PYTHONPATH=tests/fake_gpu:python python3 tests/fake_gpu/run_bench.py [bench arguments]

Imported instead of run, it only applies the stand-ins (a dry run of scripts that use the
bench's GPU harness: ``import run_bench`` first).
"""
import sys

import torch

if torch.__version__ != "0.0-fake":
    sys.exit("run_bench.py: the real torch was imported; put tests/fake_gpu first on PYTHONPATH")

import gatednorm  # noqa: E402
from gatednorm import _call, _runtime, bench, cli  # noqa: E402

gatednorm.device_count = lambda *a, **k: 1  # the bench takes its GPU path
_parse_device = _runtime.parse_device


def _parse_cuda_as_cpu(device, name="device"):
    """DeviceArray / from_pointer on "cuda:N" or GPU N: host memory (the stand-in's cuda tensors are)."""
    if (isinstance(device, str) and device.startswith("cuda")) or (type(device) is int):
        return (_runtime.CPU, 0)
    return _parse_device(device, name)


_runtime.parse_device = _parse_cuda_as_cpu
_state = _call._torch()
_call._torch_state = (_state[0], _runtime.CPU) + _state[2:]  # torch "cuda" tensors run on the CPU backend
# W4A16Weight.to("cuda:N"): the weight stays plain, as the CPU backend's w4a16_matmul takes it
gatednorm.W4A16Weight.to = lambda self, device, dtype="bfloat16", stream=None: self
bench.COPY_ELEMS = {False: 1 << 16, True: 1 << 16}
bench.GEMM_M = {False: 64, True: 64}
bench.HOST_CALLS, bench.HOST_REPEATS, bench.IMPORT_RUNS = 50, 2, 1

if __name__ == "__main__":
    sys.exit(cli.main(["bench"] + sys.argv[1:]))
