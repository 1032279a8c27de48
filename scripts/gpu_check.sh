#!/usr/bin/env bash
# One call on an H100/H200 host with no network: build for sm_90a, install, read the
# compiler's resource report and SASS, run the GPU tests, `gatednorm check`, the C consumer
# and the benchmark, and write the report to OUTDIR (at most 8 files, for the device tool).
#
#   bash scripts/gpu_check.sh OUTDIR [--quick] [--tune] [--bench-args "..."] [--skip STEPS]
#                                    [--profile "T:H ..."] [--ncu-cases "CASE ..."] [--alloc-probe "T:H ..."]
#                                    [--extra-bench "..."] [--pytest-k EXPR]
#   --tune         also builds and runs scripts/tune_rmsnorm_gated.cu (launch-shape A/B)
#   --skip         comma list of steps not to run: pytest, check, c_consumer, bench
#   --profile      Nsight Compute on ours and FLA at each T:H of gated RMSNorm (scripts/profile_cases.py), to ncu.txt
#   --ncu-cases    Nsight Compute with warp-state, scheduler, instruction and source-counter
#                  (stall sampling) sections on scripts/profile_cases.py's CASEs as given (e.g.
#                  "rmsnorm:1:7168 liger_rmsnorm:1:7168"), to ncu_cases.txt
#   --alloc-probe  scripts/alloc_probe.py at each T:H (torch-allocated against cudaMalloc'd
#                  inputs, ours and FLA), into the log
#   --pytest-k     run the tests pytest's -k EXPR selects (default: every GPU case, and every
#                  case of the files that depend on the host's torch, numpy and default
#                  device, test_adapters.py and test_import_cost.py; the whole directory,
#                  CPU cases included, is ~4900 cases and outlasts a 600 s call: run 112)
#   --sanitize F   run the pytest files F (space-separated, GPU backend cases only; narrowed
#                  further by $SANITIZE_K) under compute-sanitizer memcheck and racecheck,
#                  each bounded by $SANITIZE_TIMEOUT seconds (240), into sanitize.txt; both
#                  run in the background beside the pytest step, before the bench
#   --extra-bench  a second `gatednorm bench` with these arguments after the first (table in
#                  the log, figures in bench_extra.json)
# Files written: gpu_check.log, sass.txt, pytest.log (unless skipped), bench.{md,json,png},
# report.md, and tune.txt / ncu.txt / ncu_cases.txt / bench_extra.json with --tune /
# --profile / --ncu-cases / --extra-bench: the device tool brings back at most 8 files.
#
# Python packages the host lacks (cffi, pycparser, fla-core, einops, gemlite) come as
# wheels placed in .whl/ beforehand, installed to /tmp/site.
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUTDIR [--quick] [--bench-args ARGS]}
shift
quick=""
tune=""
bench_args=""
skip=""
profile=""
ncu_cases=""
alloc_probe=""
extra_bench=""
pytest_k=""
sanitize=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --tune) tune=1 ;;
    --bench-args) bench_args="${2:?--bench-args needs a value}"; shift ;;
    --skip) skip=",${2:?--skip needs a value},"; shift ;;
    --profile) profile="${2:?--profile needs a value}"; shift ;;
    --ncu-cases) ncu_cases="${2:?--ncu-cases needs a value}"; shift ;;
    --alloc-probe) alloc_probe="${2:?--alloc-probe needs a value}"; shift ;;
    --extra-bench) extra_bench="${2:?--extra-bench needs a value}"; shift ;;
    --pytest-k) pytest_k="${2:?--pytest-k needs a value}"; shift ;;
    --sanitize) sanitize="${2:?--sanitize needs a value}"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
cd "$(dirname "$0")/.."
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
results=()
step() { echo; echo "=================== $*"; }
record() { results+=("$1: $2"); }

step "machine"
date -u
echo "commit ${GATEDNORM_COMMIT:-$(git log -1 --format=%h 2>/dev/null || echo unknown)}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
nvcc --version | tail -2
python3 --version
echo "profilers: $(command -v nsys || echo no nsys) $(command -v ncu || echo no ncu)"

step "wheels"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/.whl/src${PYTHONPATH:+:$PYTHONPATH}
fi

step "build + install for sm_90a (pip, no network)"
t0=$(date +%s)
if GATEDNORM_GPU=CUDA CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90a" \
   python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/gn . ; then
  record build "ok ($(( $(date +%s) - t0 )) s)"
else
  record build FAIL
  printf '%s\n' "${results[@]}"
  exit 1
fi
export PYTHONPATH=/tmp/gn${PYTHONPATH:+:$PYTHONPATH}
python3 -m gatednorm info

step "resource usage and SASS of libgatednorm"
lib=$(ls /tmp/gn/gatednorm/lib/libgatednorm.so.*.*.* 2>/dev/null | head -n 1)
[ -n "$lib" ] || lib=/tmp/gn/gatednorm/lib/libgatednorm.so  # the wheel ships one file
{
  echo "# cuobjdump --dump-resource-usage $lib"
  cuobjdump --dump-resource-usage "$lib" | grep -E "Function|REG" | paste - - | \
    sed -E 's/.*Function ([^ :]+):.*REG:([0-9]+) STACK:([0-9]+) SHARED:([0-9]+) LOCAL:([0-9]+).*/REG \2 STACK \3 SHARED \4 LOCAL \5  \1/'
  echo
  echo "# instruction mix per kernel (memory, shuffles, local memory)"
  cuobjdump --dump-sass "$lib" | awk '/Function :/{fn=$3} /LDG|STG|LDL|STL|SHFL|MUFU/{match($0,/(LDG|STG|LDL|STL|SHFL|MUFU)[.A-Z0-9_]*/); c[fn" "substr($0,RSTART,RLENGTH)]++} END{for(k in c) print c[k], k}' | sort -k2,2 -k3,3
  echo
  echo "# SASS of the hot instantiation: bf16 in/out, 16 lanes x 1 chunk (D = 128)"
  cuobjdump --dump-sass "$lib" | awk '/Function : /{f=0} /Function : _ZN2gn24rmsnorm_gated_vec_kernelILi0ELi0ELi16ELi1E/{f=1} f'
} > "$out/sass.txt" 2>&1
grep -E "^REG" "$out/sass.txt" | awk '{print $2}' | sort -n | uniq -c | sed 's/^/registers: /'
if ! grep -qE "^REG" "$out/sass.txt"; then record sass "FAIL (no resource report: see sass.txt)"
elif grep -qE "STACK [1-9]|LOCAL [1-9]| (LDL|STL)" "$out/sass.txt"; then record sass "local memory used (see sass.txt)"; else record sass "no stack, no local memory"; fi
# No PDL kernel may touch global memory before its wait, nor read through ld.global.nc,
# which the compiler may issue above a wait (session 35's W4A16 lean kernels did).
if pdl_order=$(python3 scripts/pdl_order_check.py "$lib" 2>&1); then
  record "pdl order" "$(echo "$pdl_order" | tail -n 1 | sed 's/^pdl order: //')"
else
  record "pdl order" "FAIL ($(echo "$pdl_order" | tail -n 1 | sed 's/^pdl order: //'); see sass.txt)"
fi
echo "$pdl_order" | tee -a "$out/sass.txt"

if [ -n "$tune" ]; then
  step "launch-shape A/B (scripts/tune_rmsnorm_gated.cu)"
  if nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Ihip -Ipybind_free_api/include -Ipybind_free_api/src \
       scripts/tune_rmsnorm_gated.cu -o /tmp/tune && /tmp/tune | tee "$out/tune.txt"; then record tune ok; else record tune FAIL; fi
fi

skipped() { case "$skip" in *",$1,"*) record "$1" skipped; return 0 ;; esac; return 1; }

if [ -n "$profile" ]; then
  step "Nsight Compute: ours and FLA (scripts/profile_cases.py)"
  metrics=gpu__time_duration.sum,launch__grid_size,launch__block_size,launch__registers_per_thread
  metrics=$metrics,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
  metrics=$metrics,sm__warps_active.avg.pct_of_peak_sustained_active,lts__t_sector_hit_rate.pct
  metrics=$metrics,smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio,sm__ctas_launched.sum
  for shape in $profile; do
    echo "### T:H = $shape" >> "$out/ncu.txt"
    ncu --clock-control none --profile-from-start off --metrics "$metrics" \
      python3 scripts/profile_cases.py "gated:$shape" "fla_gated:$shape" >> "$out/ncu.txt" 2>&1 || record profile FAIL
  done
  grep -E "^###|gn::|layer_norm|duration|grid_size|block_size|registers|dram__|warps_active|hit_rate|long_score|ctas" "$out/ncu.txt" | head -n 200
fi

if [ -n "$ncu_cases" ]; then
  step "Nsight Compute, stall sampling: $ncu_cases (scripts/profile_cases.py)"
  # shellcheck disable=SC2086
  if timeout 300 ncu --clock-control none --profile-from-start off --section SpeedOfLight --section LaunchStats \
       --section WarpStateStats --section SchedulerStats --section InstructionStats --section SourceCounters \
       python3 scripts/profile_cases.py $ncu_cases > "$out/ncu_cases.txt" 2>&1; then record ncu_cases ok; else record ncu_cases FAIL; fi
  grep -E "^  [^ ].*\(|Duration|Executed Instructions  |Warp Cycles Per Issued|Block Size" "$out/ncu_cases.txt" | head -n 60
fi

if [ -n "$alloc_probe" ]; then
  step "allocation probe: ours and FLA on torch-allocated and cudaMalloc'd inputs (scripts/alloc_probe.py)"
  # shellcheck disable=SC2086
  if python3 scripts/alloc_probe.py $alloc_probe; then record alloc_probe ok; else record alloc_probe FAIL; fi
fi

# The sanitizers and pytest run side by side (none of them is timed; the bench runs alone
# after them): memcheck and racecheck are CPU-bound instrumentation, so the three together
# take about as long as the slowest (run 72: 92 tests under each beside the W4A16 suite).
sanitize_pids=()
if [ -n "$sanitize" ]; then
  step "compute-sanitizer memcheck + racecheck: $sanitize (GPU cases), in the background"
  for tool in memcheck racecheck; do
    # shellcheck disable=SC2086
    bash scripts/sanitize_gpu_tests.sh "$tool" "$out/sanitize_$tool.txt" $sanitize &
    sanitize_pids+=("$tool:$!")  # written under $out as it runs: a call cut short still brings it back
  done
fi

step "pytest (GPU tests included)"
if skipped pytest; then :
elif python3 -m pytest -q -p no:cacheprovider -rs -k "${pytest_k:-gpu or test_adapters or test_import_cost}" tests 2>&1 | tee "$out/pytest.log"; then record pytest ok; else record pytest FAIL; fi
[ -f "$out/pytest.log" ] && tail -n 1 "$out/pytest.log"

for entry in ${sanitize_pids[@]+"${sanitize_pids[@]}"}; do  # (an empty array under set -u: bash < 4.4)
  tool=${entry%%:*}
  wait "${entry##*:}"
  rc=$?
  case $rc in
    0) record "sanitize_$tool" ok ;;
    124) record "sanitize_$tool" "FAIL (ran past SANITIZE_TIMEOUT, no verdict)" ;;
    *) record "sanitize_$tool" "FAIL (exit $rc)" ;;
  esac
  # one file for both, as before (the device tool brings back at most 8)
  { echo "### $tool"; cat "$out/sanitize_$tool.txt"; } >> "$out/sanitize.txt" && rm -f "$out/sanitize_$tool.txt"
  echo "$tool:"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|failed" "$out/sanitize.txt" | tail -n 2
done

step "gatednorm check"
if skipped check; then :
elif python3 -m gatednorm check; then record check ok; else record check FAIL; fi

step "C consumer (find_package + CTest)"
if skipped c_consumer; then :
elif cmake -S tests/c_consumer -B /tmp/c_consumer -Dgatednorm_DIR="$(python3 -m gatednorm cmake-dir)" >/dev/null && \
   cmake --build /tmp/c_consumer >/dev/null && ctest --test-dir /tmp/c_consumer --output-on-failure; then
  record c_consumer ok
else
  record c_consumer FAIL
fi

step "benchmark"
# (no --plot with --host: the bench refuses it, having no device timings to draw)
# shellcheck disable=SC2086,SC2046
if skipped bench; then :
elif python3 -m gatednorm bench $quick $bench_args --json "$out/bench.json" \
     $(case " $bench_args " in *" --host "*) ;; *) echo --plot "$out/bench.png" ;; esac) | tee "$out/bench.md"; then
  record bench ok
else
  record bench "FAIL (result check or crash)"
fi

if [ -n "$extra_bench" ]; then
  step "second benchmark: $extra_bench"
  # shellcheck disable=SC2086
  if python3 -m gatednorm bench $extra_bench --json "$out/bench_extra.json"; then record extra_bench ok; else record extra_bench FAIL; fi
fi

step "summary"
{
  echo "# gpu_check $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  echo "commit ${GATEDNORM_COMMIT:-$(git log -1 --format=%h 2>/dev/null || echo unknown)}"
  echo
  printf -- '- %s\n' "${results[@]}"
  echo
  [ -f "$out/bench.md" ] && cat "$out/bench.md"
} > "$out/report.md"
cat "$out/report.md"
for r in "${results[@]}"; do case "$r" in *FAIL*) exit 1 ;; esac; done
exit 0
