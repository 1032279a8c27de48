"""Host-call latency probe (GPU): Python wall time per call of gatednorm.rmsnorm_gated on
[1, 24, 128] bf16 inputs, beside torch.add(out=) on the same tensors, in one process.
Loops of N calls, median of 7; synchronized outside the timed loops.  A quick look for a
GPU run; `gatednorm bench --host` is the reported measurement."""
import statistics
import sys
import time

import numpy as np
import torch

import gatednorm

N = 2000


def per_call(fn, n=N, repeats=7):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        ts.append((time.perf_counter() - t0) / n)
        torch.cuda.synchronize()
    return statistics.median(ts) * 1e6


def main():
    dev = torch.device("cuda:0")
    x, z = (torch.randn(1, 24, 128, device=dev, dtype=torch.bfloat16) for _ in range(2))
    w = torch.randn(128, device=dev, dtype=torch.bfloat16)
    o = torch.empty_like(x)
    rn = gatednorm.rmsnorm_gated
    rows = {}
    for rep in range(2):
        rows["torch.add(out=)"] = per_call(lambda: torch.add(x, z, out=o))
        rows["torch.empty_like"] = per_call(lambda: torch.empty_like(x))
        rows["ours torch out="] = per_call(lambda: rn(x, z, w, out=o))
        rows["ours torch no out"] = per_call(lambda: rn(x, z, w))
        dx, dz, dw, do = (gatednorm.DeviceArray.from_numpy(t.float().cpu().numpy().astype(gatednorm._dtypes.bfloat16), device=0)
                          for t in (x, z, w, o))
        rows["ours DeviceArray"] = per_call(lambda: rn(dx, dz, dw, out=do))
        px, pz, pw, po = (gatednorm.from_pointer(t.data_ptr(), tuple(t.shape), "bf16", device=(2, 0)) for t in (x, z, w, o))
        rows["ours from_pointer"] = per_call(lambda: rn(px, pz, pw, out=po))
        base = rows["torch.add(out=)"]
        print("pass %d" % rep)
        for k, v in rows.items():
            print("  %-22s %7.2f us  %5.2fx torch.add" % (k, v, v / base))
    if "--profile" in sys.argv:
        import cProfile
        import pstats
        cProfile.runctx("for _ in range(20000): rn(x, z, w, out=o)", globals(), {"rn": rn, "x": x, "z": z, "w": w, "o": o}, "/tmp/hp")
        pstats.Stats("/tmp/hp").sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
