"""Host-call latency probe (GPU): Python wall time per call of gatednorm.rmsnorm_gated on
[1, 24, 128] bf16 inputs, beside torch.add(out=) on the same tensors, in one process.
Loops of N calls, median of 7; synchronized outside the timed loops.  A quick look for a
GPU run; `gatednorm bench --host` is the reported measurement.  Options: --attrs (reading
one torch tensor, piece by piece), --alloc (the no-out= calls that make several outputs,
beside new_empty), --profile (cProfile of the out= call)."""
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
        # The floor under any Python layer: the C entry alone on descriptors built once.
        from gatednorm import _call
        from gatednorm._ffi import ffi
        lib = gatednorm._ffi.lib()
        descs = [_call.convert(t, "x", 0, [], True) for t in (x, z, w, o)]
        prm = gatednorm.ops._RMSNORM_GATED.params(norm_before_gate=1)
        sp = ffi.cast("void *", torch.cuda.current_stream().cuda_stream)
        fn = lib.gatednorm_rmsnorm_gated
        rows["C entry only"] = per_call(lambda: fn(descs[0], descs[1], descs[2], descs[3], prm, sp))
        E = gatednorm.ops._RMSNORM_GATED
        rows["Entry (no wrapper)"] = per_call(lambda: E(None, x, z, w, o, params=prm))
        base = rows["torch.add(out=)"]
        print("pass %d" % rep)
        for k, v in rows.items():
            print("  %-22s %7.2f us  %5.2fx torch.add" % (k, v, v / base))
    if "--attrs" in sys.argv:  # what reading one torch tensor costs, piece by piece
        import timeit

        from gatednorm import _call
        sc = _call._scratch_busy()
        table = _call._torch()[0]
        TB = torch._C.TensorBase if hasattr(torch._C, "TensorBase") else torch._C._TensorBase
        probes = {
            "x.data_ptr()": lambda: x.data_ptr(), "x.shape": lambda: x.shape, "x.size()": lambda: x.size(),
            "x.stride()": lambda: x.stride(), "x.dtype": lambda: x.dtype, "x.get_device()": lambda: x.get_device(),
            "x.is_cuda": lambda: x.is_cuda, "x.dim()": lambda: x.dim(), "table.get(x.dtype)": lambda: table.get(x.dtype),
            "TB.data_ptr(x)": lambda: TB.data_ptr(x), "TB.stride(x)": lambda: TB.stride(x),
            "_from_torch": lambda: _call._from_torch(x, "x", False, sc, 0, 0, None),
            "resolve_stream": lambda: _call.resolve_stream(None, x),
            "empty lambda": lambda: None,
        }
        for k, f in probes.items():
            t = min(timeit.repeat(f, number=20000, repeat=5)) / 20000 * 1e9
            print("  %-22s %7.0f ns" % (k, t))
        sc.busy = False
    if "--alloc" in sys.argv:  # the no-out= calls of the ops that make several outputs, piece by piece
        h = 4096
        xa, ra = (torch.randn(1, h, device=dev, dtype=torch.bfloat16) for _ in range(2))
        wa, ya = torch.ones(h, device=dev, dtype=torch.bfloat16), torch.empty(1, h, device=dev, dtype=torch.bfloat16)
        qa, sa = torch.empty(1, h, device=dev, dtype=torch.float8_e4m3fn), torch.empty(1, h // 128, device=dev)
        probes = {
            "torch.add(out=) [1, 4096]": lambda: torch.add(xa, ra, out=ya),
            "new_empty bf16 / fp8 / f32": lambda: (xa.new_empty((1, h)), xa.new_empty((1, h), dtype=torch.float8_e4m3fn),
                                                   xa.new_empty((1, 32), dtype=torch.float32)),
            "add_rmsnorm FP8 out=": lambda: gatednorm.add_rmsnorm(xa, ra, wa, fp8=True, y_out=ya, q=qa, scales=sa),
            "add_rmsnorm FP8 no out": lambda: gatednorm.add_rmsnorm(xa, ra, wa, fp8=True),
            "group_quant out=": lambda: gatednorm.group_quant_fp8(xa, q=qa, scales=sa),
            "group_quant no out": lambda: gatednorm.group_quant_fp8(xa),
        }
        with torch.inference_mode():
            for k, f in probes.items():
                print("  %-28s %7.2f us" % (k, per_call(f)))
    if "--profile" in sys.argv:
        import cProfile
        import pstats
        cProfile.runctx("for _ in range(20000): rn(x, z, w, out=o)", globals(), {"rn": rn, "x": x, "z": z, "w": w, "o": o}, "/tmp/hp")
        pstats.Stats("/tmp/hp").sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
