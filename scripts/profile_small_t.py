"""Profile target for Nsight Compute: gatednorm's gated RMSNorm and FLA's rms_norm_gated on
the same bf16 [T, H, 128] inputs (default T = 128, H = 32): both are warmed up (FLA
autotunes on its first call, made at T = 1, H = 24 as in the benchmark), then one call of
each runs between cudaProfilerStart/Stop, for `ncu --profile-from-start off`.  Used by
NOTES.md's investigations (scripts/gpu_check.sh --profile); not part of the library.

    python3 scripts/profile_small_t.py [T] [H]
"""
import sys

import torch

import gatednorm

T = int(sys.argv[1]) if len(sys.argv) > 1 else 128
H = int(sys.argv[2]) if len(sys.argv) > 2 else 32
D = 128
g = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
z = torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
w = (1 + 0.1 * torch.randn(D, device="cuda", generator=g)).to(torch.bfloat16)
out = torch.empty_like(x)
s = torch.cuda.current_stream()
calls = [lambda: gatednorm.rmsnorm_gated(x, z, w, eps=1e-6, out=out, stream=s)]
try:
    from fla.modules.norm.fused_norm_gate import rms_norm_gated

    calls.append(lambda: rms_norm_gated(x, z, w, None, activation="swish", eps=1e-6))
except ImportError as e:
    print("fla missing:", e)
with torch.inference_mode():
    if len(calls) > 1:
        # As in the benchmark: FLA autotunes on its first call, at T = 1, H = 24, and its
        # autotune key (rows // 64k) reuses that choice for every shape under 64k rows.
        x1 = torch.randn(1, 24, D, device="cuda", dtype=torch.bfloat16)
        rms_norm_gated(x1, x1.clone(), w, None, activation="swish", eps=1e-6)
    for f in calls:
        for _ in range(4):
            f()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for f in calls:
        f()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
print("done", T, H)
