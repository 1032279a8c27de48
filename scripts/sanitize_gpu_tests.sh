#!/usr/bin/env bash
# One compute-sanitizer tool over the GPU cases of some pytest files (narrowed further by
# $SANITIZE_K), bounded by $SANITIZE_TIMEOUT seconds (240), the log to OUTFILE.  Exit status:
# 0 clean, 9 a sanitizer report, 124 past the bound, else pytest's.  gpu_check.sh and
# ab_then_tests.sh start memcheck and racecheck with it side by side, in the background.
#   bash scripts/sanitize_gpu_tests.sh memcheck|racecheck OUTFILE FILE...
tool=${1:?memcheck or racecheck}; log=${2:?OUTFILE}; shift 2
exec > "$log" 2>&1
exec timeout "${SANITIZE_TIMEOUT:-240}" compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 20 \
  python3 -m pytest -q -p no:cacheprovider -x -k "gpu ${SANITIZE_K:+and ($SANITIZE_K)}" "${@:?pytest files}"
