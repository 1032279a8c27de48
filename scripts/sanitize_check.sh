#!/usr/bin/env bash
# The sanitizer check of CI: build the CPU-only library and the C ABI fuzz driver with
# AddressSanitizer + UndefinedBehaviorSanitizer (GATEDNORM_SANITIZE=ON; any report aborts),
# run the driver (tests/fuzz/fuzz_abi.c, >= 10^5 seeded cases), then install that build to a
# prefix under the build dir and build and run the C consumer of tests/c_consumer against it
# through find_package + CTest (the sanitizer link flags travel with the exported target).
# Exits non-zero on any failure.  FUZZ_SEED / FUZZ_CASES override the driver's seed / count.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
build=build/sanitize
prefix=$PWD/$build/install
jobs=${GATEDNORM_JOBS:-2}
gen=()
if command -v ninja >/dev/null; then gen=(-G Ninja); fi

echo "== sanitizer build (ASan + UBSan, CPU only): $build"
cmake -S . -B "$build" "${gen[@]}" -DGATEDNORM_GPU=OFF -DGATEDNORM_SANITIZE=ON -DGATEDNORM_BUILD_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build "$build" -j "$jobs"

echo "== fuzz driver"
t0=$SECONDS
"$build/fuzz_abi" --seed "${FUZZ_SEED:-1}" --cases "${FUZZ_CASES:-100000}"
echo "fuzz_abi took $((SECONDS - t0)) s"

echo "== C consumer against the sanitizer build (find_package + CTest)"
rm -rf "$prefix"
cmake --install "$build" >/dev/null
cfg=$(find "$prefix" -name gatednormConfig.cmake -print -quit)
[ -n "$cfg" ] || { echo "no gatednormConfig.cmake under $prefix" >&2; exit 1; }
# The consumer's own code is instrumented too; the exported target adds the same flags at link.
cmake -S tests/c_consumer -B "$build/c_consumer" "${gen[@]}" -Dgatednorm_DIR="$(dirname "$cfg")" \
  -DCMAKE_C_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g" >/dev/null
cmake --build "$build/c_consumer"
ctest --test-dir "$build/c_consumer" --output-on-failure

echo "== sanitizer check passed in $((SECONDS - start)) s"
