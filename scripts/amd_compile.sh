#!/usr/bin/env bash
# Compile libgatednorm.so for the AMD GPUs users run (MI250 gfx90a, MI300X gfx942,
# MI355X gfx950, Strix Halo gfx1151) with HIP 6.4 / clang 21 in the ROCm root of
# rocm_chroot.sh (found as below), then check that a code object for every target is inside.
# Nothing here can run AMD code; this proves the HIP sources build for every target.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=${GATEDNORM_AMD_TARGETS:-gfx90a;gfx942;gfx950;gfx1151}
# The ROCm root's tool: any executable that runs its one argument, a shell command, inside a
# Linux root with HIP 6.4 (clang 21) and CMake, with this checkout as the working directory.
# $ROCM_CHROOT names it; else the development machines' copy is looked for as
# shared/tools/rocm_chroot.sh in the folder holding this checkout, the main checkout of a git
# worktree (the common .git directory's parent) or the repository a local clone was made
# from (a clone under mktemp -d has none beside it).  None: exit 2.
helper=shared/tools/rocm_chroot.sh
chroot_tool=${ROCM_CHROOT:-}
if [ -z "$chroot_tool" ]; then
  cands=("../$helper")
  common=$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
  [ -n "$common" ] && cands+=("$(dirname "$(dirname "$common")")/$helper")
  origin=$(git config --get remote.origin.url 2>/dev/null || true)
  case "$origin" in
    file://*) origin=${origin#file://} ;;
  esac
  case "$origin" in  # a local path, normalized (`git clone . DIR` records ".../repo/.")
    /*) if o=$(cd "$origin" 2>/dev/null && pwd -P); then cands+=("$(dirname "$o")/$helper"); fi ;;
  esac
  for c in "${cands[@]}"; do
    if [ -x "$c" ]; then chroot_tool=$c; break; fi
  done
fi
if [ -z "$chroot_tool" ] || [ ! -x "$chroot_tool" ]; then
  echo "amd_compile: no ROCm chroot helper: set ROCM_CHROOT=/path/to/rocm_chroot.sh, or keep" >&2
  echo "  ../$helper beside the checkout (looked at: ${ROCM_CHROOT:-${cands[*]}})" >&2
  exit 2
fi
echo "== AMD compile (ROCm root of $chroot_tool)"
rm -rf build-amd
"$chroot_tool" "cmake -S . -B build-amd -DGATEDNORM_GPU=HIP -DCMAKE_HIP_ARCHITECTURES='$targets' >/dev/null && cmake --build build-amd -j2"
lib=$(ls build-amd/libgatednorm.so.*.*.* | head -n 1)
IFS=';' read -ra want <<<"$targets"
for t in "${want[@]}"; do
  if ! grep -aq "amdgcn-amd-amdhsa--$t" "$lib"; then
    echo "FAIL: no code object for $t in $lib" >&2
    exit 1
  fi
done
echo "AMD compile OK: $lib has code objects for $targets"
