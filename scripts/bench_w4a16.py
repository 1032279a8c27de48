#!/usr/bin/env python3
"""W4A16 GEMM bench (docs/performance.md protocol) on one GPU, torch required.

    python scripts/bench_w4a16.py [--shapes 4096x6144,...] [--ms 1,4,16] [--group 128] [--sym] [--fp16]

Times ours (gatednorm.w4a16_matmul, tiled weight, preallocated workspace), tinygemm
(torch.ops.aten._weight_int4pack_mm, bf16 only), gemlite (A16W4, if importable; reported
missing otherwise) and dense torch.matmul of the dequantized weight, each inside a CUDA graph
of ~20 calls (fewer for calls over 2 ms), median over >= 15 replays, with the weights rotated
over enough copies that the working set exceeds 2x L2.  Before timing, each result is checked
against the float64 product a @ w16 (ours within reference.w4a16_tolerance; peers' worst
relative error is printed).  The copy ceiling is an elementwise device copy of 1 GiB outside a
graph (read + write bytes).  "of copy": the tiled weight's bytes (codes + scales + zeros) over
ours' time, as a fraction of that ceiling.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

try:
    import gatednorm  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import numpy as np
import torch

import gatednorm
from gatednorm import reference

L2_BYTES = 50 * 2 ** 20  # H200; rotation covers 2x this
SHAPES = [(4096, 6144), (4096, 4096), (4096, 24576), (12288, 4096)]  # K x N
MS = [1, 4, 16, 64, 256, 1024, 4096]


def copy_bandwidth():
    n = 2 ** 30 // 2
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        dst.copy_(src)
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1e-3)
    del src, dst
    return 2 * 2 ** 30 / statistics.median(ts)


def graph_time(fns, calls=20, replays=15):
    """Median seconds per call of fns[i % len(fns)]() captured `calls` times in a graph."""
    st = torch.cuda.Stream()
    st.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(st):
        for f in fns[:3]:
            f()
    torch.cuda.current_stream().wait_stream(st)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fns[0]()
    torch.cuda.synchronize()
    one = time.perf_counter() - t0
    if one > 2e-3:
        calls = max(2, min(calls, int(0.04 / one)))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fns[i % len(fns)]()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(replays):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1e-3 / calls)
    del g
    return statistics.median(ts)


def make_weight(k, n, group, symmetric, gen):
    """Random plain weight on the GPU (torch): codes [N, K] int, zeros [N, K/G], scales bf16."""
    q = torch.randint(0, 16, (n, k), device="cuda", dtype=torch.uint8, generator=gen)
    z = None if symmetric else torch.randint(0, 16, (n, k // group), device="cuda", dtype=torch.uint8, generator=gen)
    s = (torch.rand((n, k // group), device="cuda", generator=gen) * 0.02 + 0.002).to(torch.bfloat16)
    return q, z, s


def w16_of(q, z, s, group, dt):
    zz = torch.full_like(s, 8, dtype=torch.float32) if z is None else z.float()
    w = (q.float() - zz.repeat_interleave(group, 1)) * s.to(dt).float().repeat_interleave(group, 1)
    return w.to(dt)  # [N, K], the GEMM's rounding rule


def ours_weight(q, z, s, group, dt):
    plain = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    w = gatednorm.W4A16Weight(plain.cpu().numpy(), s.float().cpu().numpy(), None if z is None else z.cpu().numpy())
    return w.to("cuda:%d" % torch.cuda.current_device(), "bfloat16" if dt == torch.bfloat16 else "float16")


def tinygemm_weight(q, z, s, group):
    """tinygemm packs [N, K/2] uint8 (high nibble first) and dequantizes (q - 8) * s + zero."""
    packed = ((q[:, 0::2] << 4) | q[:, 1::2]).contiguous()
    wq = torch.ops.aten._convert_weight_to_int4pack(packed, 8)
    zz = torch.full_like(s, 8, dtype=torch.float32) if z is None else z.float()
    zero = ((8 - zz) * s.float()).to(torch.bfloat16)
    sz = torch.stack([s.t(), zero.t()], dim=2).contiguous()  # [K/G, N, 2]
    return wq, sz


def rel_err(out, ref):
    return float(((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join("%dx%d" % s for s in SHAPES))
    ap.add_argument("--ms", default=",".join(map(str, MS)))
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--sym", action="store_true")
    ap.add_argument("--fp16", action="store_true")
    args = ap.parse_args()
    dt = torch.float16 if args.fp16 else torch.bfloat16
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    ms = [int(v) for v in args.ms.split(",")]
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    try:
        import gemlite  # noqa: F401
        from gemlite.helper import A16W4  # noqa: F401
        have_gemlite = True
    except Exception as e:  # noqa: BLE001
        have_gemlite = False
        print("gemlite: missing (%s)" % e)
    bw = copy_bandwidth()
    print("device: %s  copy ceiling: %.0f GB/s  group %d %s %s  torch %s  gatednorm %s" % (
        torch.cuda.get_device_name(), bw / 1e9, args.group, "sym" if args.sym else "asym",
        "fp16" if args.fp16 else "bf16", torch.__version__, gatednorm.version()))
    rows = []
    for k, n in shapes:
        q, z, s = make_weight(k, n, args.group, args.sym, gen)
        w16 = w16_of(q, z, s, args.group, dt)
        ours = ours_weight(q, z, s, args.group, dt)
        wbytes = ours._packed.nbytes
        copies = max(1, math.ceil(2 * L2_BYTES / wbytes))
        ours_w = [ours] + [ours_weight(q, z, s, args.group, dt) for _ in range(copies - 1)]
        dense_w = [w16.t().contiguous() for _ in range(max(1, math.ceil(2 * L2_BYTES / (2 * n * k))))]
        tiny = None
        if dt == torch.bfloat16:
            try:
                tiny = [tinygemm_weight(q, z, s, args.group) for _ in range(copies)]
            except Exception as e:  # noqa: BLE001
                print("tinygemm: unavailable (%s)" % e)
        gl = None
        if have_gemlite:
            try:
                from gemlite.helper import A16W4
                zz = torch.full_like(s, 8) if z is None else z
                gl = [A16W4(device="cuda").from_weights(q.view(n, k), s.view(n, -1).to(dt), zz.view(n, -1).to(dt), None)
                      for _ in range(copies)]
            except Exception as e:  # noqa: BLE001
                print("gemlite: error building the layer (%s)" % e)
                gl = None
        for m in ms:
            a = torch.randn(m, k, device="cuda", dtype=dt, generator=gen)
            ref = a.double() @ w16.double().t()
            out = torch.full((m, n), float("nan"), device="cuda", dtype=dt)
            gatednorm.w4a16_matmul(a, ours, out=out)  # allocates a workspace if needed
            torch.cuda.synchronize()
            tol = (k + 64) * 2.0 ** -23 * (a.double().abs() @ w16.double().abs().t()) + \
                0.5 * torch.finfo(dt).eps * (ref.abs() + 1e-30)
            bad = int(((out.double() - ref).abs() > tol).sum().item()) + int(out.isnan().sum().item())
            check = "ok" if bad == 0 else "FAIL (%d)" % bad
            # preallocate the workspace (graph capture allocates nothing)
            prm = ours._params
            from gatednorm import _runtime
            from gatednorm._ffi import check, ffi, lib as _lib
            sz = ffi.new("size_t *")
            dev = ffi.new("gatednorm_device *", (_runtime.gpu_device_type(), torch.cuda.current_device()))
            check(_lib().gatednorm_w4a16_workspace_size(prm, m, dev[0], sz), "gatednorm_w4a16_workspace_size")
            need = int(sz[0])
            wss = torch.empty(max(need, 16), device="cuda", dtype=torch.uint8) if need else None
            t_ours = graph_time([lambda w=w: gatednorm.w4a16_matmul(a, w, out=out, workspace=wss) for w in ours_w])
            row = {"K": k, "N": n, "M": m, "ours": t_ours, "check": check}
            row["dense"] = graph_time([lambda d=d: torch.matmul(a, d) for d in dense_w])
            if tiny is not None:
                try:
                    r = torch.ops.aten._weight_int4pack_mm(a, tiny[0][0], args.group, tiny[0][1])
                    row["tiny_err"] = rel_err(r, ref)
                    row["tinygemm"] = graph_time([lambda t=t: torch.ops.aten._weight_int4pack_mm(a, t[0], args.group, t[1])
                                                  for t in tiny])
                except Exception as e:  # noqa: BLE001
                    row["tinygemm"] = None
                    print("tinygemm M=%d: %s" % (m, e))
            if gl is not None:
                try:
                    row["gl_err"] = rel_err(gl[0].forward(a), ref)
                    row["gemlite"] = graph_time([lambda g=g: g.forward(a) for g in gl])
                except Exception as e:  # noqa: BLE001
                    row["gemlite"] = None
                    print("gemlite M=%d: %s" % (m, e))
            row["frac"] = wbytes / t_ours / bw
            rows.append(row)
            print("K=%5d N=%5d M=%4d  ours %8.2f us (%3.0f%% of copy) %s  dense %8.2f  tinygemm %s  gemlite %s" % (
                k, n, m, t_ours * 1e6, 100 * row["frac"], check, row["dense"] * 1e6,
                "%.2f" % (row["tinygemm"] * 1e6) if row.get("tinygemm") else "-",
                "%.2f" % (row["gemlite"] * 1e6) if row.get("gemlite") else ("missing" if not have_gemlite else "-")), flush=True)
        del ours_w, dense_w, tiny, gl
        torch.cuda.empty_cache()
    print()
    print("| K x N | M | ours us | of copy | dense us | tinygemm us | gemlite us | x dense | x tinygemm | x gemlite | check | tinygemm rel err | gemlite rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    f = lambda v: "%.2f" % (v * 1e6) if v else ("missing" if v is None else "-")  # noqa: E731
    for r in rows:
        x = lambda key: "%.2f" % (r[key] / r["ours"]) if r.get(key) else "-"  # noqa: E731
        print("| %dx%d | %d | %.2f | %.0f%% | %.2f | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["K"], r["N"], r["M"], r["ours"] * 1e6, 100 * r["frac"], r["dense"] * 1e6, f(r.get("tinygemm")),
            f(r.get("gemlite")) if have_gemlite else "missing", x("dense"), x("tinygemm"), x("gemlite"), r["check"],
            "%.1e" % r["tiny_err"] if "tiny_err" in r else "-", "%.1e" % r["gl_err"] if "gl_err" in r else "-"))


if __name__ == "__main__":
    main()
