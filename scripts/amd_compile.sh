#!/usr/bin/env bash
# Compile libgatednorm.so for the AMD GPUs users run (MI250 gfx90a, MI300X gfx942,
# MI355X gfx950, Strix Halo gfx1151) with HIP 6.4 / clang 21 in the ROCm root of
# ../shared/tools/rocm_chroot.sh, then check that a code object for every target is inside.
# Nothing here can run AMD code; this proves the HIP sources build for every target.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=${GATEDNORM_AMD_TARGETS:-gfx90a;gfx942;gfx950;gfx1151}
# The ROCm root's tool: $ROCM_CHROOT, else the shared tree beside this checkout, else the
# workplace's (a clone made elsewhere, e.g. under mktemp -d, has no ../shared).
chroot_tool=${ROCM_CHROOT:-}
if [ -z "$chroot_tool" ]; then
  for c in ../shared/tools/rocm_chroot.sh /work/shared/tools/rocm_chroot.sh; do
    if [ -x "$c" ]; then chroot_tool=$c; break; fi
  done
fi
if [ -z "$chroot_tool" ]; then
  echo "FAIL: no rocm_chroot.sh (set ROCM_CHROOT, or keep ../shared/tools beside the checkout)" >&2
  exit 1
fi
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
