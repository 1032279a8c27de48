#!/usr/bin/env bash
# The plain `cmake --install` tree as a C/C++ engine meets it (the wheel's tree is what
# scripts/run_tests.sh's C consumer and tests/test_cli.py check): build the CPU-only library
# (GATEDNORM_GPU=OFF) and install it under several layouts; for each, build and run
# tests/install_consumer/consumer.c through `pkg-config --cflags --libs gatednorm` and through
# find_package(gatednorm) (tests/install_consumer/CMakeLists.txt).
#   - the default layout, then the same prefix moved elsewhere (both files are relocatable);
#   - an absolute CMAKE_INSTALL_LIBDIR, and an absolute CMAKE_INSTALL_INCLUDEDIR (GNUInstallDirs
#     takes either; distribution builds pass them): gatednorm.pc named <prefix>/<absolute dir>
#     or /include before a packaging review's fix.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
build=build/install_check
# Prefixes outside the source and build trees: CMake refuses an install include folder inside
# them (an absolute CMAKE_INSTALL_INCLUDEDIR there reads as a build-tree path).
work=$(mktemp -d "${TMPDIR:-/tmp}/gatednorm_install_check.XXXXXX")
trap 'rm -rf "$work"' EXIT
gen=()
if command -v ninja >/dev/null; then gen=(-G Ninja); fi

fail() { echo "FAIL: $*" >&2; exit 1; }

# consumer_pkg_config <folder holding gatednorm.pc> <label>
consumer_pkg_config() {
  local flags
  flags=$(PKG_CONFIG_PATH="$1" pkg-config --cflags --libs gatednorm) || fail "$2: pkg-config --cflags --libs gatednorm"
  # shellcheck disable=SC2086  # the flags are words
  cc -std=c99 -Wall -Wextra -Werror tests/install_consumer/consumer.c $flags -o "$work/pc_consumer" ||
    fail "$2: the pkg-config consumer does not build with: $flags"
  "$work/pc_consumer" >/dev/null || fail "$2: the pkg-config consumer does not run (flags: $flags)"
  echo "ok  $2: pkg-config consumer"
}

# consumer_cmake <label> <version asked, or ""> <cmake -D option naming the package>
consumer_cmake() {
  local b=$work/cmake_consumer
  rm -rf "$b"
  cmake -S tests/install_consumer -B "$b" ${gen[@]+"${gen[@]}"} "$3" -DGN_REQUEST="$2" >"$work/cmake.log" 2>&1 ||
    { cat "$work/cmake.log" >&2; fail "$1: find_package(gatednorm $2) does not configure"; }
  cmake --build "$b" >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; fail "$1: the find_package consumer does not build"; }
  "$b/consumer" >/dev/null || fail "$1: the find_package consumer does not run"
  echo "ok  $1: find_package(gatednorm $2) consumer"
}

# install_layout <prefix> [extra cmake -D options...]: configure, build and install there.
install_layout() {
  local prefix=$1
  shift
  rm -rf "$prefix"
  cmake -S . -B "$build" ${gen[@]+"${gen[@]}"} -DGATEDNORM_GPU=OFF -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_INSTALL_INCLUDEDIR=include "$@" >/dev/null
  cmake --build "$build" -j "${GATEDNORM_JOBS:-2}" >/dev/null
  cmake --install "$build" >/dev/null
}

have_pkg_config=1
if ! command -v pkg-config >/dev/null; then
  have_pkg_config=0
  echo "note: no pkg-config here: the pkg-config consumers are skipped"
fi

echo "== default layout"
install_layout "$work/prefix"
[ "$have_pkg_config" = 1 ] && consumer_pkg_config "$work/prefix/lib/pkgconfig" "default layout"
consumer_cmake "default layout" "" -DCMAKE_PREFIX_PATH="$work/prefix"

echo "== the same prefix, moved"
mv "$work/prefix" "$work/moved"
[ "$have_pkg_config" = 1 ] && consumer_pkg_config "$work/moved/lib/pkgconfig" "moved prefix"
consumer_cmake "moved prefix" "" -DCMAKE_PREFIX_PATH="$work/moved"

echo "== absolute CMAKE_INSTALL_LIBDIR"
install_layout "$work/abs_lib" -DCMAKE_INSTALL_LIBDIR="$work/abs_lib/lib64"
[ "$have_pkg_config" = 1 ] && consumer_pkg_config "$work/abs_lib/lib64/pkgconfig" "absolute libdir"
consumer_cmake "absolute libdir" "" -Dgatednorm_DIR="$work/abs_lib/lib64/cmake/gatednorm"

echo "== absolute CMAKE_INSTALL_INCLUDEDIR (outside the prefix)"
install_layout "$work/abs_inc" -DCMAKE_INSTALL_INCLUDEDIR="$work/abs_inc_headers/include"
[ "$have_pkg_config" = 1 ] && consumer_pkg_config "$work/abs_inc/lib/pkgconfig" "absolute includedir"
consumer_cmake "absolute includedir" "" -DCMAKE_PREFIX_PATH="$work/abs_inc"

echo "== install check passed in $((SECONDS - start)) s"
