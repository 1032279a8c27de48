"""Does where the inputs come from change the timing, for ours and FLA alike?  The C++ tuner
(one cudaMalloc per tensor) times the library's kernel ~5% faster at [1024, 32] than the
benchmark does (torch's caching allocator), runs 18-21.  This times ours and FLA's
rms_norm_gated with the benchmark's own graph timing on rotated input sets allocated both
ways: torch tensors, and gatednorm DeviceArrays (one cudaMalloc each) seen by torch through
DLPack.  Used by NOTES.md's investigation; not part of the library.

    python3 scripts/alloc_probe.py [T:H ...]      (default 1024:32 1024:24)
"""
import sys

import numpy as np
import torch

import gatednorm
from gatednorm._dtypes import bfloat16
from gatednorm.bench import HEAD_DIM, OPS, _Gpu

OP = OPS["rmsnorm_gated"]


def torch_sets(g, T, H, n, gen):
    return [g.make_case(OP, "bf16", (T, H), gen) for _ in range(n)]


def cudamalloc_sets(g, T, H, n, rng):
    """Each tensor its own DeviceArray (its own cudaMalloc), wrapped by torch without a copy."""
    sets, keep = [], []
    for _ in range(n):
        host = [rng.standard_normal((T, H, HEAD_DIM)).astype(bfloat16) for _ in range(2)]
        host.append((1 + 0.1 * rng.standard_normal(HEAD_DIM)).astype(bfloat16))
        arrs = [gatednorm.DeviceArray.from_numpy(a, device=g.dev.index) for a in host]
        keep.append(arrs)
        sets.append(dict(zip(("x", "z", "w"), (torch.from_dlpack(a) for a in arrs))))
    return sets, keep


def main():
    shapes = [tuple(int(v) for v in s.split(":")) for s in sys.argv[1:]] or [(1024, 32), (1024, 24)]
    g = _Gpu(torch, quick=False)
    fla = g.peers_of(OP)[0].get("fla_rms_norm_gated")
    gen = torch.Generator(device=g.dev)
    gen.manual_seed(2)
    rng = np.random.default_rng(2)
    g.bench_shape(gatednorm, OP, "bf16", (1, 24), ["fla_rms_norm_gated"] if fla else [], ours_modes=("out",))  # warm-up, FLA's autotune
    for T, H in shapes:
        n = g.rotation(T * H * HEAD_DIM * 6)
        out = torch.full((T, H, HEAD_DIM), float("nan"), device=g.dev, dtype=torch.bfloat16)
        cm, keep = cudamalloc_sets(g, T, H, n, rng)
        for label, sets in (("torch allocator", torch_sets(g, T, H, n, gen)), ("one cudaMalloc each", cm)):
            sets = [{**s, "out": out} for s in sets]  # one output buffer, as the bench writes
            ulps, ok = g.check_ours(gatednorm, OP, sets[0])
            if not ok:
                sys.exit(f"[{T}, {H}] {label}: ours' result is wrong ({ulps:.2f} ulps or rows left unwritten)")
            ours = g.time_ours(gatednorm, OP, sets)
            line = f"[{T}, {H}] {label:>20}: ours {ours * 1e6:.2f} us"
            if fla:
                with torch.inference_mode():
                    peer = g.time_graph([(lambda s=s: fla.fn(s["x"], s["z"], s["w"])) for s in sets])
                line += f", FLA {peer * 1e6:.2f} us, ours/FLA {peer / ours:.3f}x"
            print(line, flush=True)
        del cm, keep
    if fla:
        print(f"FLA's autotuned configs in this process: {fla.config()}", flush=True)


if __name__ == "__main__":
    main()
