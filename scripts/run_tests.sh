#!/usr/bin/env bash
# The test command of README.md: build and install the package (CMake through
# scikit-build-core; the GPU backend too when a toolchain is found), run the pytest suite
# against the installed package, print the CPU-mode bench figures, then build the C
# consumer in tests/c_consumer with find_package(gatednorm) against the installed tree and
# run it through CTest.
# GPU tests run when a GPU is visible and skip themselves otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
pip_args=${GATEDNORM_PIP_ARGS:-}

echo "== install"
# shellcheck disable=SC2086
"$py" -m pip install -q $pip_args ".[test]"

echo "== pytest"
# From tests/'s parent but with the installed package first on the path: the suite must
# exercise what users get, not the source tree.
"$py" -m pytest -q -p no:cacheprovider tests

echo "== bench, CPU mode (--cpu --quick): the CPU backend against numpy, host-call latency, import time"
# Figures for the log (~10 s on 2 cores).  Speed never fails it: it exits non-zero only on a
# crash or a result that disagrees with the float64 reference.
"$py" -m gatednorm bench --cpu --quick

echo "== C consumer (find_package + CTest)"
cmake_dir=$("$py" -m gatednorm cmake-dir)
cmake -S tests/c_consumer -B build/c_consumer -Dgatednorm_DIR="$cmake_dir" >/dev/null
cmake --build build/c_consumer
ctest --test-dir build/c_consumer --output-on-failure
