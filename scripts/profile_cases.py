"""Profile target for Nsight Compute: one call each of gatednorm's ops and their peers on the
same bf16 inputs.  Each case is warmed up (FLA autotunes on its first call, made at T = 1,
H = 24 as in the benchmark), then one call of each runs between cudaProfilerStart/Stop, for
`ncu --profile-from-start off` (scripts/gpu_check.sh --profile; the perf log's small-T
investigations).  Not part of the library.

    python3 scripts/profile_cases.py CASE ...
    CASE = gated:T:H | fla_gated:T:H          gated RMSNorm [T, H, 128] (ours / FLA's rms_norm_gated)
         | gated_fp8:T:H                       ours fused with FP8 (G = 128, row-major scales)
         | [liger_]VARIANT:T:HIDDEN            VARIANT: rmsnorm, plain (add-RMSNorm), fp8_bf16
                                               (add-RMSNorm + FP8 G = 128 + bf16 copy), group_quant
         | w4a16:M:N:K[:KERNEL]                the W4A16 GEMM (G = 128 asym bf16, random codes),
                                               KERNEL a GATEDNORM_W4A16_KERNEL value (mma, wide, ...)
"""
import os
import sys

import torch

import gatednorm

EPS, G, D = 1e-6, 128, 128


def randn(*shape, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=g)


def gated(T, H, fla):
    x, z = randn(T, H, D, seed=T * 7 + H), randn(T, H, D, seed=T * 7 + H + 1)
    w = (1 + 0.1 * randn(D, seed=1).float()).to(torch.bfloat16)
    if not fla:
        out = torch.empty_like(x)
        return lambda: gatednorm.rmsnorm_gated(x, z, w, eps=EPS, out=out)
    from fla.modules.norm.fused_norm_gate import rms_norm_gated
    x1 = randn(1, 24, D, seed=2)  # FLA's autotune shape in the benchmark (its key reuses it below 64k rows)
    rms_norm_gated(x1, x1.clone(), w, None, activation="swish", eps=EPS)
    return lambda: rms_norm_gated(x, z, w, None, activation="swish", eps=EPS)


def gated_fp8(T, H):
    x, z = randn(T, H, D, seed=T * 7 + H), randn(T, H, D, seed=T * 7 + H + 1)
    w = (1 + 0.1 * randn(D, seed=1).float()).to(torch.bfloat16)
    q = torch.empty(T, H * D, device="cuda", dtype=torch.float8_e4m3fn)
    scales = torch.empty(T, H * D // G, device="cuda", dtype=torch.float32)
    return lambda: gatednorm.rmsnorm_gated_fp8(x, z, w, eps=EPS, group_size=G, q=q, scales=scales)


def add_norm(variant, T, H, liger):
    x, r = randn(T, H, seed=T * 7 + H), randn(T, H, seed=T * 7 + H + 1)
    w = (1 + 0.1 * randn(H, seed=1).float()).to(torch.bfloat16)
    y = torch.empty_like(x)
    q = torch.empty(T, H, device="cuda", dtype=torch.float8_e4m3fn)
    scales = torch.empty(H // G, (T + 3) // 4 * 4, device="cuda", dtype=torch.float32).T[:T]
    if liger:
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        if variant == "rmsnorm":
            return lambda: LigerRMSNormFunction.apply(x, w, EPS, 0.0, "gemma", True, None)
        return lambda: LigerFusedAddRMSNormFunction.apply(x, r, w, EPS, 0.0, "gemma", False)
    calls = {"rmsnorm": lambda: gatednorm.rmsnorm(x, w, eps=EPS, y_out=y),
             "plain": lambda: gatednorm.add_rmsnorm(x, r, w, eps=EPS, y_out=y),
             "fp8_bf16": lambda: gatednorm.add_rmsnorm(x, r, w, eps=EPS, y_out=y, fp8=True, group_size=G, q=q, scales=scales),
             "group_quant": lambda: gatednorm.group_quant_fp8(x, group_size=G, q=q, scales=scales)}
    return calls[variant]


def w4a16(m, n, k, kernel):
    import numpy as np

    rng = np.random.default_rng(m + n + k)
    q = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
    s = rng.uniform(0.002, 0.05, (n, k // G)).astype(np.float32)
    z = rng.integers(0, 16, (n, k // G), dtype=np.uint8)
    w = gatednorm.W4A16Weight(q, s, z).to("gpu:0", gatednorm._dtypes.bfloat16)
    a = randn(m, k, seed=m * 7 + k)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)

    def call():  # the hook is read at each call (host side, outside the profiled kernel)
        if kernel:
            os.environ["GATEDNORM_W4A16_KERNEL"] = kernel
        else:
            os.environ.pop("GATEDNORM_W4A16_KERNEL", None)
        gatednorm.w4a16_matmul(a, w, out=out)
    return call


def make(case):
    if case.startswith("w4a16:"):
        parts = case.split(":")
        return w4a16(int(parts[1]), int(parts[2]), int(parts[3]), parts[4] if len(parts) > 4 else None)
    name, T, H = case.split(":")
    T, H = int(T), int(H)
    if name in ("gated", "fla_gated"):
        return gated(T, H, name == "fla_gated")
    if name == "gated_fp8":
        return gated_fp8(T, H)
    liger = name.startswith("liger_")
    variant = name[6:] if liger else name
    if variant not in ("rmsnorm", "plain", "fp8_bf16", "group_quant"):
        raise SystemExit(f"unknown case {case}")
    return add_norm(variant, T, H, liger)


def maybe(case):
    try:
        return make(case)
    except ImportError as e:  # a peer's package missing: profile the rest
        print(f"{case}: skipped ({e})")
        return None


def main():
    with torch.inference_mode():
        calls = [f for f in map(maybe, sys.argv[1:]) if f is not None]
        for f in calls:
            for _ in range(4):
                f()
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        for f in calls:
            f()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    print("done", *sys.argv[1:])


if __name__ == "__main__":
    main()
