"""How much slower is add-RMSNorm's generic kernel than its row kernel?  The row kernel takes
16-bit x with a residual of x's dtype, hidden 256..16384 a multiple of 8, 16-byte aligned
rows; everything else (an fp32 residual beside bf16 x, fp32 x, a misaligned row, hidden past
16384) runs the generic kernel, never timed before (NOTES.md, open questions).  Times
add_rmsnorm (+ FP8 + bf16 copy, and plain) for those cases beside the row kernel's, with
CUDA graphs over input sets rotated past 2x L2, and says which kernel ran.  Not part of the
library.

    python3 scripts/generic_add_probe.py [T ...]      (default 1 128 1024 8192)
"""
import sys

import torch

import gatednorm

REPS, CALLS = 15, 20


def time_us(fn_sets):
    """Median us a call of a CUDA graph of CALLS calls rotating over the given closures."""
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for f in fn_sets:
            f()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=s):
            for i in range(CALLS):
                fn_sets[i % len(fn_sets)]()
        g.replay()
        torch.cuda.synchronize()
        ts = []
        for _ in range(REPS):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(s)
            g.replay()
            b.record(s)
            b.synchronize()
            ts.append(a.elapsed_time(b) * 1e3 / CALLS)
    return sorted(ts)[len(ts) // 2]


def case(T, H, x_dt, r_dt, fp8, offset=0):
    """Closures calling add_rmsnorm over enough input sets to pass 2x L2; the kernel's name."""
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    per = T * (H + offset) * (torch.tensor([], dtype=x_dt).element_size() + 2 * torch.tensor([], dtype=r_dt).element_size())
    n = max(2, min(CALLS, -(-2 * l2 // per) + 1))
    w = torch.ones(H, device="cuda", dtype=torch.bfloat16)
    fns = []
    for _ in range(n):
        xb = torch.randn(T, H + offset, device="cuda").to(x_dt)
        rb = torch.randn(T, H + offset, device="cuda").to(r_dt)
        x, r = xb[:, offset:], rb[:, offset:]  # offset 1: rows 2 bytes off 16-byte alignment
        y = torch.empty(T, H, device="cuda", dtype=torch.bfloat16)
        if fp8:
            q = torch.empty(T, H, device="cuda", dtype=torch.float8_e4m3fn)
            sc = torch.empty(T, H // 128, device="cuda", dtype=torch.float32)
            fns.append(lambda x=x, r=r, y=y, q=q, sc=sc: gatednorm.add_rmsnorm(
                x, r, w, y_out=y, fp8=True, q=q, scales=sc, stream=torch.cuda.current_stream()))
        else:
            fns.append(lambda x=x, r=r, y=y: gatednorm.add_rmsnorm(x, r, w, y_out=y, stream=torch.cuda.current_stream()))
    fns[0]()
    torch.cuda.synchronize()
    return fns, gatednorm.last_kernel()


def main():
    tokens = [int(v) for v in sys.argv[1:]] or [1, 128, 1024, 8192]
    bf, f32 = torch.bfloat16, torch.float32
    rows = [("bf16 x + bf16 residual (row kernel)", 4096, bf, bf, 0),
            ("bf16 x + fp32 residual", 4096, bf, f32, 0),
            ("fp32 x + fp32 residual", 4096, f32, f32, 0),
            ("bf16, rows 2 bytes off alignment", 4096, bf, bf, 1),
            ("bf16, hidden 16384 (row kernel)", 16384, bf, bf, 0),
            ("bf16, hidden 16512", 16512, bf, bf, 0)]
    print("| case | T | plain us | kernel | +FP8 +bf16 copy us | kernel |")
    print("|---|---|---|---|---|---|")
    for name, H, xd, rd, off in rows:
        for T in tokens:
            fns, k0 = case(T, H, xd, rd, False, off)
            plain = time_us(fns)
            fns, k1 = case(T, H, xd, rd, True, off)
            fp8 = time_us(fns)
            print("| %s, hidden %d | %d | %.2f | %s | %.2f | %s |" % (name, H, T, plain, k0, fp8, k1))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
