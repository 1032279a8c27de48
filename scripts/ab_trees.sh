#!/usr/bin/env bash
# Builds of gatednorm side by side on one GPU host: the working tree and older commits, each
# built for sm_90a and run as its own process (a library is timed only beside the builds it
# is compared with, in one call: docs/bench.md).
#
# This side (has git):  bash scripts/ab_trees.sh prepare COMMIT...
#     writes each commit's tree to ab_trees/<short hash>/ (git-ignored; carry "ab_trees" and
#     ".whl" in the device call), after removing any tree an earlier prepare left there
#     (every tree under ab_trees/ is built and run on the device).
# The GPU host:         bash scripts/ab_trees.sh bench OUTDIR "BENCH ARGS" [ROUNDS]
#     builds the working tree ("work") and every ab_trees/* in parallel (/tmp/ab/<name>), then
#     runs `python3 -m gatednorm bench BENCH ARGS --json ...` for each, one process at a time,
#     ROUNDS times (default 1; even rounds in reverse order).  Two files come back whatever
#     the number of builds and rounds (the device tool brings back at most 8):
#     OUTDIR/ab_tables.md (each run's table rows, its exit status and time; the same rows on
#     stdout) and OUTDIR/ab_bench.json ({name: {round: the bench's JSON}}).  rc 1 when a
#     bench process failed (a result check, a crash: its last lines are in ab_tables.md).
#                       bash scripts/ab_trees.sh bits OUTDIR SCRIPT.py
#     builds as above, runs `python3 SCRIPT.py NAME.npz` under each build (the .npz files stay
#     in /tmp/ab/res), and compares every array of each build's npz with the working tree's,
#     byte for byte, dtype and shape too; the verdict goes to stdout and OUTDIR/ab_bits.txt
#     (rc 1 when any differs or a SCRIPT failed).  SCRIPT makes its inputs from fixed seeds,
#     poisons its outputs and fails where a poisoned element is left
#     (scripts/ab_w4a16_lean_bits.py is one).
# A failed build: its log in OUTDIR/build_<name>.log, rc 1.  $AB_TMP replaces /tmp/ab.
set -uo pipefail
mode=${1:?prepare, bench or bits}
shift
root=$(cd "$(dirname "$0")/.." && pwd) || exit 1
if [ "$mode" = prepare ]; then
  cd "$root" || exit 1
  [ $# -gt 0 ] || { echo "prepare: name at least one commit" >&2; exit 2; }
  hs=()
  for c in "$@"; do
    h=$(git rev-parse --verify --short "$c^{commit}") || exit 1
    hs+=("$h")
  done
  rm -rf ab_trees || exit 1
  for h in "${hs[@]}"; do
    mkdir -p "ab_trees/$h" && git archive "$h" | tar -x -C "ab_trees/$h" || exit 1
    echo "ab_trees/$h: $(git log -1 --format='%h %s' "$h" | cut -c1-100)"
  done
  du -sh ab_trees
  exit 0
fi
case "$mode" in bench|bits) ;; *) echo "unknown mode $mode (prepare, bench or bits)" >&2; exit 2 ;; esac
out=${1:?OUTDIR}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 1
cd "$root" || exit 1
tmp=${AB_TMP:-/tmp/ab}
export PYTHONUNBUFFERED=1
# One library for every build's process (docs/bench.md's other A/B) would make this one
# build timed N times and compared with itself.
unset GATEDNORM_LIBRARY
for v in GATEDNORM_W4A16_KERNEL GATEDNORM_W4A16_ROWS_PER_LAUNCH GATEDNORM_ROW_VEC GATEDNORM_FP8_LANE_ELEMS; do
  if [ -n "${!v:-}" ]; then echo "note: $v=${!v} applies to every build"; fi
done
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
# As scripts/gpu_check.sh: cffi on the path for the builds too (CMake's _ffi_build.py writes
# each wheel's prebuilt _cffi_abi.py only where it imports cffi), gemlite's source for the bench.
export PYTHONPATH=/tmp/site:$PWD/.whl/src${PYTHONPATH:+:$PYTHONPATH}
names=(work)
srcs=(.)
for d in ab_trees/*/; do
  [ -d "$d" ] || continue
  names+=("$(basename "$d")")
  srcs+=("$d")
done
if [ "${#names[@]}" -lt 2 ]; then
  echo "no ab_trees/*/ here: run 'prepare' on the git side and carry ab_trees" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
# Nothing of an earlier call on a warm machine is used: builds, logs and results start afresh.
rm -rf "$tmp" && mkdir -p "$tmp/logs" "$tmp/res" && tmp=$(cd "$tmp" && pwd) || exit 1
t0=$(date +%s)
pids=()
for i in "${!names[@]}"; do
  # (the CMake build dirs are each tree's own build/{wheel_tag}: pyproject.toml's build-dir)
  GATEDNORM_GPU=CUDA CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90a" python3 -m pip install -q --no-index --no-deps \
    --no-build-isolation --no-cache-dir --upgrade --target "$tmp/${names[$i]}" "${srcs[$i]}" \
    > "$tmp/logs/build_${names[$i]}.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do  # every build waited for: one call reports every broken tree
  if ! wait "${pids[$i]}"; then
    echo "build ${names[$i]} failed (OUTDIR/build_${names[$i]}.log):"
    tail -n 20 "$tmp/logs/build_${names[$i]}.log"
    cp "$tmp/logs/build_${names[$i]}.log" "$out/"
    failed=1
  fi
done
[ "$failed" = 0 ] || exit 1
echo "builds: ${names[*]} ($(( $(date +%s) - t0 )) s)"
site() { echo "$tmp/$1:$PYTHONPATH"; }
for n in "${names[@]}"; do
  # the library each process loads must be its own build's
  info=$(PYTHONPATH=$(site "$n") python3 -c 'import gatednorm, gatednorm._ffi as f
print(gatednorm.__version__, f.library_path(), gatednorm.build_info())' 2>&1) || { echo "$n: import failed: $info"; exit 1; }
  case "$info" in
    *" $tmp/$n/"*) echo "$n: $info" ;;
    *) echo "$n: loads another build's library: $info"; exit 1 ;;
  esac
done
case "$mode" in
  bench)
    args=${2:?BENCH ARGS}
    rounds=${3:-1}
    : > "$out/ab_tables.md"
    bad=0
    for round in $(seq 1 "$rounds"); do
      order=()
      if [ $((round % 2)) = 0 ]; then
        for ((j = ${#names[@]} - 1; j >= 0; j--)); do order+=("${names[$j]}"); done
      else
        order=("${names[@]}")
      fi
      for n in "${order[@]}"; do
        log=$tmp/logs/bench_$n.$round.log
        t1=$(date +%s)
        # shellcheck disable=SC2086  # the bench's arguments, split as given
        GATEDNORM_COMMIT=$n PYTHONPATH=$(site "$n") python3 -m gatednorm bench $args --json "$tmp/res/$n.$round.json" > "$log" 2>&1
        rc=$?
        {
          echo "=== round $round: $n"
          grep -E '^\| |^device|^FAIL|^missing peer|^peer ' "$log"
          if [ "$rc" != 0 ]; then echo "(last lines)"; tail -n 8 "$log"; fi
          echo "=== $n round $round: rc $rc, $(( $(date +%s) - t1 )) s"
        } | tee -a "$out/ab_tables.md"
        [ "$rc" = 0 ] || bad=1
      done
    done
    python3 - "$tmp/res" "$out/ab_bench.json" <<'PY'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
res = {}
for f in sorted(os.listdir(src)):
    if f.endswith(".json"):
        name, rnd, _ = f.rsplit(".", 2)
        with open(os.path.join(src, f)) as fh:
            res.setdefault(name, {})[rnd] = json.load(fh)
with open(dst, "w") as fh:
    json.dump(res, fh, indent=1)
print("%s: %s" % (dst, ", ".join("%s (%d)" % (n, len(r)) for n, r in res.items())))
PY
    exit "$bad" ;;
  bits)
    script=${2:?SCRIPT.py}
    [ -f "$script" ] || { echo "no such script: $script"; exit 2; }
    ran=()
    bad=0
    : > "$out/ab_bits.txt"
    for n in "${names[@]}"; do
      if PYTHONPATH=$(site "$n") python3 "$script" "$tmp/res/$n.npz"; then
        ran+=("$n")
      else
        echo "$n: $script failed (not compared)" | tee -a "$out/ab_bits.txt"
        bad=1
      fi
    done
    [ "${ran[0]:-}" = work ] || { echo "nothing to compare with: the working tree's run failed"; exit 1; }
    python3 - "$tmp/res" "${ran[@]}" <<'PY' | tee -a "$out/ab_bits.txt"
import sys, numpy as np
res, names = sys.argv[1], sys.argv[2:]
ref = np.load(f"{res}/{names[0]}.npz")
bad = 0
if len(names) < 2:
    print("only", names[0], "ran: nothing compared"); bad += 1
for n in names[1:]:
    got = np.load(f"{res}/{n}.npz")
    if sorted(got.files) != sorted(ref.files):
        print(f"{n}: other cases than {names[0]}'s: missing {sorted(set(ref.files) - set(got.files))}, "
              f"extra {sorted(set(got.files) - set(ref.files))}")
        bad += 1
        continue
    differ = []
    for k in ref.files:
        a, b = ref[k], got[k]  # (each access reads the file again)
        if (a.dtype, a.shape) != (b.dtype, b.shape) or a.tobytes() != b.tobytes():
            differ.append(k)
    bad += len(differ)
    print(f"{n}: {len(ref.files) - len(differ)} of {len(ref.files)} arrays the same bits as {names[0]}"
          + (f"; DIFFER: {' '.join(differ)}" if differ else ""))
print("arrays differing:", bad)
sys.exit(1 if bad else 0)
PY
    [ "$?" = 0 ] && [ "$bad" = 0 ] ;;
esac
