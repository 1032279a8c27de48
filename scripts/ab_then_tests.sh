#!/usr/bin/env bash
# One device call for a kernel A/B that also tests the working tree, with two builds, not three:
# scripts/ab_trees.sh bench (builds the working tree and ab_trees/* side by side, benches each),
# then the working tree's build (/tmp/ab/work) runs the pytest selection, memcheck and racecheck
# of the GPU cases of $SANITIZE_FILES (default tests/test_w4a16.py) that $SANITIZE_K selects,
# and its SASS of one function goes to OUTDIR.
#   bash scripts/ab_then_tests.sh OUTDIR "BENCH ARGS" "PYTEST -k EXPR" [SASS FUNCTION]
# rc 1 when the A/B (a build, a bench's result check), pytest or a sanitizer failed.
set -uo pipefail
out=${1:?OUTDIR}; bench=${2:?BENCH ARGS}; sel=${3:?PYTEST -k EXPR}; fun=${4:-}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 1
cd "$(dirname "$0")/.." || exit 1
bad=0
timeout "${AB_TIMEOUT:-300}" bash scripts/ab_trees.sh bench "$out" "$bench" || bad=1
echo "ab_trees: $([ "$bad" = 0 ] && echo ok || echo FAILED)"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/ab/work:/tmp/site:$PWD/.whl/src
unset GATEDNORM_LIBRARY
lib=/tmp/ab/work/gatednorm/lib/libgatednorm.so
[ -f "$lib" ] || { echo "no build at $lib"; exit 1; }
[ -n "$fun" ] && cuobjdump -sass -fun "$fun" "$lib" 2>/dev/null | head -4000 > "$out/fun.sass"
export SANITIZE_TIMEOUT=${SANITIZE_TIMEOUT:-200}
for tool in memcheck racecheck; do
  # shellcheck disable=SC2086
  bash scripts/sanitize_gpu_tests.sh "$tool" "$out/sanitize_$tool.txt" ${SANITIZE_FILES:-tests/test_w4a16.py} &
done
sanitizers=$(jobs -p)
python3 -m pytest -q -p no:cacheprovider -rs -k "$sel" tests > "$out/pytest.log" 2>&1 || bad=1
tail -n 3 "$out/pytest.log"
for pid in $sanitizers; do wait "$pid" || bad=1; done
for tool in memcheck racecheck; do echo "$tool:"; grep -E "passed|failed|SUMMARY" "$out/sanitize_$tool.txt" | tail -3; done
exit "$bad"
