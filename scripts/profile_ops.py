"""Profile target for Nsight Compute: one call each of the kernels whose speed is open
(NOTES.md, "Open questions"), warmed up first, between cudaProfilerStart/Stop, for
`ncu --profile-from-start off`.  Each case prints its label before it runs, so the ncu
report's kernels can be matched to cases in order.  Not part of the library.

    python3 scripts/profile_ops.py [CASE ...]      (default: every case)

PROFILE_REPEAT=N profiles N back-to-back calls of each case (with `ncu --cache-control none`:
the later ones as a warm loop runs them).

Cases (the kernel choice forced through the launchers' width hooks):
    fp8_e8, fp8_e16     gated RMSNorm + FP8, bf16 [4096, 32, 128], G = 128, e4m3fn
    rms_vec8, rms_vec16 RMSNorm bf16 [8192, 4096]
    addq_vec8           add-RMSNorm + FP8 + bf16 copy [1024, 4096]
    w4_m1, w4_m16       W4A16 G = 128 asym bf16, K x N = 4096 x 4096, M = 1 / 16
    gated_t1            gated RMSNorm bf16 [1, 32, 128] (the decode step's norm)
    fp8_t1, fp8_t1_e8   gated RMSNorm + FP8 at [1, 32, 128], E by the launcher's rule (4 there) / 8
    compile_fp8_t1      the bench's torch.compile peer of fp8_t1 (its kernels, same shape)
    rms_t1, add_t1, addq_t1   [1, 7168]: RMSNorm, add-RMSNorm, add-RMSNorm + FP8 + bf16 copy
    liger_rms_t1, liger_add_t1  liger-kernel's RMSNorm / fused add-RMSNorm at [1, 7168]

A suggested command (bounded, metrics that say whether a kernel waits on memory, on its
own dependency chains, or on instruction issue):

    timeout 300 ncu --profile-from-start off --metrics \\
      gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,\\
    sm__warps_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,\\
    smsp__inst_executed.sum,launch__registers_per_thread,launch__grid_size,launch__block_size,\\
    smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio,\\
    smsp__average_warp_latency_issue_stalled_short_scoreboard.ratio,\\
    smsp__average_warp_latency_issue_stalled_wait.ratio,\\
    smsp__average_warp_latency_issue_stalled_math_pipe_throttle.ratio \\
      python3 scripts/profile_ops.py > $OUT/ncu_ops.txt 2>&1
"""
import os
import sys

import numpy as np
import torch

import gatednorm
from gatednorm import bench

dev = "cuda"
gen = torch.Generator(device=dev).manual_seed(0)


def randn(*shape, scale=1.0):
    return (scale * torch.randn(*shape, device=dev, generator=gen)).to(torch.bfloat16)


def fp8_case(elems, T=4096, peer=False):
    """Ours with E = elems a lane (None: the launcher's rule), or the bench's torch.compile peer."""
    H, D = 32, 128
    x, z, w = randn(T, H, D), randn(T, H, D, scale=2.0), randn(D, scale=0.1) + 1
    q = torch.empty(T, H * D, device=dev, dtype=torch.float8_e4m3fn)
    s = torch.empty(T, H * D // 128, device=dev, dtype=torch.float32)
    if peer:
        f = bench._compiled(torch, "gated_fp8", bench._gated_fp8_eager(torch))
        return lambda: f(x, z, w, False)

    def call():
        if elems is None:
            os.environ.pop("GATEDNORM_FP8_LANE_ELEMS", None)
        else:
            os.environ["GATEDNORM_FP8_LANE_ELEMS"] = str(elems)
        gatednorm.rmsnorm_gated_fp8(x, z, w, group_size=128, q=q, scales=s)
    return call


def gated_t1_case():
    x, z, w = randn(1, 32, 128), randn(1, 32, 128, scale=2.0), randn(128, scale=0.1) + 1
    y = torch.empty_like(x)
    return lambda: gatednorm.rmsnorm_gated(x, z, w, out=y)


def t1_case(kind):
    Hd = 7168
    x, r, w = randn(1, Hd), randn(1, Hd), randn(Hd, scale=0.1) + 1
    y = torch.empty(1, Hd, device=dev, dtype=torch.bfloat16)
    q = torch.empty(1, Hd, device=dev, dtype=torch.float8_e4m3fn)
    s = torch.empty(1, Hd // 128, device=dev, dtype=torch.float32)
    os.environ.pop("GATEDNORM_ROW_VEC", None)
    if kind == "rms":
        return lambda: gatednorm.rmsnorm(x, w, y_out=y)
    if kind == "add":
        return lambda: gatednorm.add_rmsnorm(x, r, w, y_out=y)
    if kind == "addq":
        return lambda: gatednorm.add_rmsnorm(x, r, w, y_out=y, fp8=True, group_size=128, q=q, scales=s)
    liger = bench._liger(torch)  # the bench's peer, called as the bench calls it
    if kind == "liger_rms":
        return lambda: liger(x, None, w, "rmsnorm")
    return lambda: liger(x, r, w, "plain")


def rms_case(vec):
    T, Hd = 8192, 4096
    x, w, y = randn(T, Hd), randn(Hd, scale=0.1) + 1, torch.empty(T, Hd, device=dev, dtype=torch.bfloat16)

    def call():
        os.environ["GATEDNORM_ROW_VEC"] = str(vec)
        gatednorm.rmsnorm(x, w, y_out=y)
    return call


def addq_case(vec):
    T, Hd = 1024, 4096
    x, r, w = randn(T, Hd), randn(T, Hd), randn(Hd, scale=0.1) + 1
    y = torch.empty(T, Hd, device=dev, dtype=torch.bfloat16)
    q = torch.empty(T, Hd, device=dev, dtype=torch.float8_e4m3fn)
    s = torch.empty(T, Hd // 128, device=dev, dtype=torch.float32)

    def call():
        os.environ["GATEDNORM_ROW_VEC"] = str(vec)
        gatednorm.add_rmsnorm(x, r, w, y_out=y, fp8=True, group_size=128, q=q, scales=s)
    return call


def w4_case(m):
    K, N = 4096, 4096
    rng = np.random.default_rng(0)
    wt = gatednorm.W4A16Weight.from_float(rng.standard_normal((N, K)).astype(np.float32), 128, False)
    wd = wt.to("gpu:0", "bfloat16")
    a = randn(m, K)
    out = torch.empty(m, N, device=dev, dtype=torch.bfloat16)

    def call():
        gatednorm.w4a16_matmul(a, wd, out=out)
    return call


CASES = {
    "fp8_e8": lambda: fp8_case(8), "fp8_e16": lambda: fp8_case(16),
    "rms_vec8": lambda: rms_case(8), "rms_vec16": lambda: rms_case(16),
    "addq_vec8": lambda: addq_case(8),
    "w4_m1": lambda: w4_case(1), "w4_m16": lambda: w4_case(16),
    "rms_t1": lambda: t1_case("rms"), "add_t1": lambda: t1_case("add"), "addq_t1": lambda: t1_case("addq"),
    "liger_rms_t1": lambda: t1_case("liger_rms"), "liger_add_t1": lambda: t1_case("liger_add"),
    "gated_t1": gated_t1_case, "fp8_t1": lambda: fp8_case(None, T=1), "fp8_t1_e8": lambda: fp8_case(8, T=1), "compile_fp8_t1": lambda: fp8_case(None, T=1, peer=True),
}


def main(names):
    unknown = [n for n in names if n not in CASES]
    if unknown:
        sys.exit("unknown case(s) %s; known: %s" % (", ".join(unknown), ", ".join(CASES)))
    calls = [(n, CASES[n]()) for n in names or CASES]
    with torch.inference_mode():
        for _, f in calls:
            for _ in range(3):
                f()
        torch.cuda.synchronize()
        reps = int(os.environ.get("PROFILE_REPEAT", "1"))  # back-to-back calls profiled (warm loop)
        for name, f in calls:
            print("case", name, flush=True)
            torch.cuda.cudart().cudaProfilerStart()
            for _ in range(reps):
                f()
            torch.cuda.synchronize()
            torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main(sys.argv[1:])
