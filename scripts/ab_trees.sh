#!/usr/bin/env bash
# Builds of gatednorm side by side on one GPU host: the working tree and older commits, each
# built for sm_90a and run as its own process (a library is timed only beside the builds it
# is compared with, in one call: docs/bench.md).
#
# This side (has git):  bash scripts/ab_trees.sh prepare COMMIT...
#     writes each commit's tree to ab_trees/<short hash>/ (git-ignored; carry "ab_trees" and
#     ".whl" in the device call).
# The GPU host:         bash scripts/ab_trees.sh bench OUTDIR "BENCH ARGS" [ROUNDS]
#     builds the working tree and every ab_trees/* in parallel (/tmp/ab/<name>), then runs
#     `python3 -m gatednorm bench BENCH ARGS --json OUTDIR/<name>.<round>.json` for each,
#     alternating builds, ROUNDS times (default 1); the table rows go to stdout.
#                       bash scripts/ab_trees.sh bits OUTDIR SCRIPT.py
#     builds as above, runs `python3 SCRIPT.py OUTDIR/<name>.npz` under each build, and
#     compares every array of each build's npz with the working tree's, byte for byte
#     (rc 1 when any differs).  SCRIPT makes its inputs from fixed seeds and poisons its
#     outputs (scripts/ab_w4a16_lean_bits.py is one).
set -uo pipefail
mode=${1:?prepare, bench or bits}
shift
if [ "$mode" = prepare ]; then
  for c in "$@"; do
    h=$(git rev-parse --short "$c") || exit 1
    rm -rf "ab_trees/$h" && mkdir -p "ab_trees/$h" && git archive "$h" | tar -x -C "ab_trees/$h" || exit 1
    echo "ab_trees/$h: $(git log -1 --format='%h %s' "$h" | cut -c1-100)"
  done
  exit 0
fi
out=${1:?OUTDIR}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
names=(work)
srcs=(.)
for d in ab_trees/*/; do
  [ -d "$d" ] || continue
  names+=("$(basename "$d")")
  srcs+=("$d")
done
t0=$(date +%s)
pids=()
for i in "${!names[@]}"; do
  GATEDNORM_GPU=CUDA CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90a" python3 -m pip install -q --no-index --no-deps \
    --no-build-isolation --upgrade --target "/tmp/ab/${names[$i]}" "${srcs[$i]}" > "$out/build_${names[$i]}.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "build ${names[$i]} failed:"; tail -20 "$out/build_${names[$i]}.log"; exit 1; }
done
echo "builds: ${names[*]} ($(( $(date +%s) - t0 )) s)"
site() { echo "/tmp/ab/$1:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"; }
for n in "${names[@]}"; do
  echo "$n: $(PYTHONPATH=$(site "$n") python3 -c 'import gatednorm; print(gatednorm.__version__, gatednorm.build_info())')"
done
case "$mode" in
  bench)
    args=${2:?BENCH ARGS}
    for round in $(seq 1 "${3:-1}"); do
      for n in "${names[@]}"; do
        echo "=== round $round: $n"
        # shellcheck disable=SC2086  # the bench's arguments, split as given
        PYTHONPATH=$(site "$n") python3 -m gatednorm bench $args --json "$out/$n.$round.json" 2>&1 | grep '^| \|^device'
      done
    done ;;
  bits)
    script=${2:?SCRIPT.py}
    for n in "${names[@]}"; do
      PYTHONPATH=$(site "$n") python3 "$script" "$out/$n.npz" || exit 1
    done
    python3 - "$out" "${names[@]}" <<'PY'
import sys, numpy as np
out, names = sys.argv[1], sys.argv[2:]
ref = np.load(f"{out}/{names[0]}.npz")
bad = 0
for n in names[1:]:
    got = np.load(f"{out}/{n}.npz")
    if sorted(got.files) != sorted(ref.files):
        print(f"{n}: other cases than {names[0]}'s"); bad += 1; continue
    for key in ref.files:
        same = ref[key].tobytes() == got[key].tobytes() and ref[key].shape == got[key].shape
        bad += not same
        print(f"{key}: {n} {'same bits as' if same else 'DIFFERS from'} {names[0]}")
print("arrays differing:", bad)
sys.exit(1 if bad else 0)
PY
    ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
