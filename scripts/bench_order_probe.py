"""Which step of the benchmark makes later graphs of ours slower?  Run 16 showed the first
shape the process times running ~0.3 us faster than the same kernel timed later, and the
C++ tuner (its own process, nothing else run) agreeing with the first.  This times ours,
with the benchmark's own graph timing, at two shapes: once before anything else, then after
each step the benchmark takes before it (ceilings, then each peer timed once at T = 1,
H = 24), each time both on input sets allocated at the start and on fresh ones (placement
against process state).  Used by NOTES.md's investigation; not part of the library.

    python3 scripts/bench_order_probe.py
"""
import torch

import gatednorm
from gatednorm.bench import OPS, _Gpu

SHAPES = ((1, 24), (1024, 32))
OP = OPS["rmsnorm_gated"]


def main():
    g = _Gpu(torch, quick=False)
    gen = torch.Generator(device=g.dev)
    gen.manual_seed(1)

    def sets_for(T, H):
        return [g.make_case(OP, "bf16", (T, H), gen) for _ in range(g.rotation(OP.bytes("bf16", (T, H))))]

    early = {s: sets_for(*s) for s in SHAPES}

    def ours(sets):
        return g.time_ours(gatednorm, OP, sets)  # writes the first set's out, as the bench does

    def report(step):
        cells = []
        for shape in SHAPES:
            fresh = sets_for(*shape)
            cells.append(f"{shape}: early sets {ours(early[shape]) * 1e6:.2f} us, fresh {ours(fresh) * 1e6:.2f} us")
            del fresh
        print(f"{step:>28}: " + "; ".join(cells), flush=True)

    report("first")
    report("again")
    g.ceilings()
    report("after ceilings")
    for peer in ("eager", "compile", "fla_rms_norm_gated", "fla_rmsnorm_fn"):
        if peer in g.peers_of(OP)[0]:
            g.bench_shape(gatednorm, OP, "bf16", (1, 24), [peer], ours_modes=("out",))
            report(f"after {peer}")
    g.bench_shape(gatednorm, OP, "bf16", (1024, 32), list(g.peers_of(OP)[0]), ours_modes=("out",))
    report("after all peers at [1024,32]")


if __name__ == "__main__":
    main()
