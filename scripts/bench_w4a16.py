#!/usr/bin/env python3
"""W4A16 GEMM bench: a thin wrapper of ``gatednorm bench --op w4a16`` (the declaration
``W4A16Bench`` in python/gatednorm/bench.py holds what this script used to: tinygemm, gemlite
and cuBLAS dense peers, weights rotated past 2x L2, the fraction of copy bandwidth on the
weight bytes, each peer's accuracy against float64, and issue #14's targets).

    python scripts/bench_w4a16.py [--shapes 4096x6144,...] [--ms 1,4,16] [other gatednorm bench options]

--shapes picks the default K x N pairs whose K and N are listed (else every K, N pair);
--group, --sym and --fp16 are gone (the declaration times G = 128 asymmetric bf16 only).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import gatednorm  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from gatednorm import cli


def translate(argv):
    out, it = ["bench", "--op", "w4a16"], iter(argv)
    for arg in it:
        name, eq, val = arg.partition("=")
        if name in ("--shapes", "--ms"):
            val = val if eq else next(it, "")
            if name == "--ms":
                out += ["--m", val]
                continue
            pairs = [tuple(p.split("x")) for p in val.split(",") if p]
            out += ["--k", ",".join(dict.fromkeys(k for k, _ in pairs)), "--n", ",".join(dict.fromkeys(n for _, n in pairs))]
        elif name in ("--group", "--sym", "--fp16"):
            raise SystemExit(f"{name}: no longer supported (gatednorm bench --op w4a16 times G = 128 asymmetric bf16)")
        else:
            out.append(arg)
    return out


if __name__ == "__main__":
    sys.exit(cli.main(translate(sys.argv[1:])))
