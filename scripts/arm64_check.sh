#!/usr/bin/env bash
# The CPU backend on aarch64 (Grace hosts of GH200 / GB200, Graviton), from an x86-64 machine:
# cross-compile libgatednorm.so (GATEDNORM_GPU=OFF) and the C ABI fuzz driver with Debian's
# aarch64-linux-gnu toolchain, then run the driver under qemu-user.  Its fixed cases set the
# FP control register directly (FPCR flush-to-zero, upward rounding) and test the exception
# flags of pooled calls, so this runs cpu_fenv.h's aarch64 code (FPCR / FPSR), which no x86
# build compiles, as well as every entry point's checks and results; then the C consumer's
# raw-fork test (children of _Fork() while the pool is busy) under the same emulator.
#
#   bash scripts/arm64_check.sh          # FUZZ_CASES (default 20000), FUZZ_SEED (default 1)
#
# Needs aarch64-linux-gnu-g++ and qemu-aarch64 (Debian: g++-aarch64-linux-gnu qemu-user);
# installed through apt-get when missing and this runs as root.  Without them: exit 2.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
build=build/arm64
sysroot=/usr/aarch64-linux-gnu

if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing g++-aarch64-linux-gnu and qemu-user (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++-aarch64-linux-gnu qemu-user >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++-aarch64-linux-gnu qemu-user >/dev/null; }
  fi
fi
for tool in aarch64-linux-gnu-g++ aarch64-linux-gnu-gcc qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "arm64_check: $tool not found (Debian: g++-aarch64-linux-gnu qemu-user)" >&2; exit 2; }
done

echo "== aarch64 cross build (CPU backend, fuzz driver): $build"
gen=(); if command -v ninja >/dev/null; then gen=(-G Ninja); fi
rm -rf "$build"
cmake -S . -B "$build" ${gen[@]+"${gen[@]}"} -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
  -DCMAKE_BUILD_TYPE=Release -DGATEDNORM_GPU=OFF -DGATEDNORM_BUILD_FUZZ=ON >/dev/null
cmake --build "$build" -j "${GATEDNORM_JOBS:-2}"
machine=$(od -An -tx1 -j18 -N2 "$build/fuzz_abi" | tr -d ' ')  # ELF e_machine, little-endian: 0xb7 = aarch64
[ "$machine" = "b700" ] || { echo "FAIL: $build/fuzz_abi is not an aarch64 ELF (e_machine bytes $machine)" >&2; exit 1; }

echo "== fuzz driver under qemu-aarch64"
QEMU_LD_PREFIX=$sysroot qemu-aarch64 "$build/fuzz_abi" --seed "${FUZZ_SEED:-1}" --cases "${FUZZ_CASES:-20000}"
echo "== _Fork() children of a busy pool under qemu-aarch64 (tests/c_consumer/raw_fork.c)"
aarch64-linux-gnu-gcc -std=c99 -O2 -Ipybind_free_api/include -Itests/c_consumer tests/c_consumer/raw_fork.c -o "$build/raw_fork" \
  -L"$build" -lgatednorm -lpthread -ldl -lm
QEMU_LD_PREFIX=$sysroot LD_LIBRARY_PATH=$PWD/$build timeout 600 qemu-aarch64 "$build/raw_fork" 20
echo "== aarch64 check passed in $((SECONDS - start)) s"
