"""Command line: ``gatednorm <command>`` (also ``python -m gatednorm``).

  info        version, build info, backends, visible devices
  check       run every op on every available backend against gatednorm.reference
  cmake-dir   print the folder holding gatednormConfig.cmake
  pkgconfig-dir  print the folder holding gatednorm.pc (for PKG_CONFIG_PATH)
  bench       time ops (provided by gatednorm.bench, see below)

Hook for ``bench``: the module ``gatednorm.bench`` provides either
``add_arguments(parser)`` + ``main(args) -> int`` (the ``bench`` subparser is created here,
filled by add_arguments, and runs main), or ``add_parser(subparsers)``, which registers the
``bench`` subcommand itself (``p.set_defaults(func=run)``, ``run(args) -> int`` the exit
code).  Without the module, ``bench`` reports that it is unavailable.
"""

from __future__ import annotations

import argparse
import sys
import traceback

import numpy as np

__all__ = ["main", "check_cases", "run_check"]


# ----------------------------------------------------------------------------------- info
def _cmd_info(args) -> int:
    import gatednorm
    from . import _ffi, _runtime

    print("gatednorm (python) %s" % gatednorm.__version__)
    try:
        _ffi.load()
    except gatednorm.GatedNormError as e:
        print("library:    not loaded: %s" % e)
        return 1
    print("library:    %s" % _ffi.library_path())
    print("version:    %s" % gatednorm.version())
    print("build:      %s" % gatednorm.build_info())
    print("gpu build:  %s" % _gpu_flavour(gatednorm))
    print("header:     %s" % _ffi.header_path())
    print("ffi:        %s" % ("prebuilt gatednorm/_cffi_abi.py" if _ffi.PREBUILT else "the header parsed at run time (no prebuilt module, or it was built from another header)"))
    n = gatednorm.device_count()
    gpu = _runtime.gpu_device_type()
    backends = ["cpu"] + (["%s (%d device%s)" % (_runtime._TYPE_NAMES.get(gpu, "gpu"), n, "" if n == 1 else "s")]
                          if n else [])
    print("backends:   %s" % ", ".join(backends))
    print("devices:")
    print("  cpu        host memory (CPU backend)")
    for i in range(n):
        try:
            p = gatednorm.device_properties(i)
            name = "%s (%d multiprocessors, warp %d, L2 %.0f MiB)" % (p["name"], p["multiprocessors"], p["warp_size"], p["l2_bytes"] / 2**20)
        except gatednorm.GatedNormError as e:
            name = "? (%s)" % e
        print("  gpu:%-6d %s" % (i, name))
    print("cmake dir:  %s" % gatednorm.cmake_dir())
    print("pkg-config: %s" % gatednorm.pkgconfig_dir())
    print("include:    %s" % gatednorm.get_include())
    return 0


_PLATFORMS = {0: "OFF", 2: "CUDA", 10: "HIP"}


def _gpu_flavour(gatednorm) -> str:
    """The loaded library's GPU backend (CUDA / HIP / OFF), and the wheel's _build.json when
    there is one (it should agree: a mismatch means GATEDNORM_LIBRARY points elsewhere)."""
    from . import _ffi

    lib = _PLATFORMS.get(int(_ffi.lib().gatednorm_gpu_device_type()), "?")
    wb = gatednorm.wheel_build()
    if wb is None:
        return "%s (library); no _build.json (not a wheel install)" % lib
    return "%s (library); wheel: gpu=%s targets=%s" % (lib, wb.get("gpu", "?"), wb.get("targets") or "-")


def _cmd_cmake_dir(args) -> int:
    import gatednorm

    print(gatednorm.cmake_dir())
    return 0


def _cmd_pkgconfig_dir(args) -> int:
    import gatednorm

    print(gatednorm.pkgconfig_dir())
    return 0


# ----------------------------------------------------------------------------------- check
class _Case:
    def __init__(self, name, shape=(17, 4, 128), x="bf16", z="bf16", w="bf16", out=None, gate="before",
                 activation="silu", weight_offset=0.0, group_size=None, strided_z=False, strided_out=False,
                 strided_x=False, inplace=False):
        self.name, self.shape = name, shape
        self.x, self.z, self.w, self.out = x, z, w, out or x
        self.gate, self.activation, self.weight_offset = gate, activation, weight_offset
        self.group_size = group_size
        self.strided_z, self.strided_out, self.strided_x, self.inplace = strided_z, strided_out, strided_x, inplace


def check_cases() -> list:
    """The cases ``gatednorm check`` runs (dtypes, gate orders, activations, no gate, odd
    sizes, 2-D/3-D/grouped views, strided inputs/outputs, in place)."""
    C = _Case
    return [
        C("bf16 norm*silu(z)       [17,4,128]"),
        C("bf16 norm(x*silu(z))    [17,4,128]", gate="after"),
        C("bf16 norm*sigmoid(z)    [17,4,128]", activation="sigmoid"),
        C("bf16 norm(x*sigmoid(z)) [17,4,128]", gate="after", activation="sigmoid"),
        C("fp16                    [17,4,128]", x="fp16", z="fp16", w="fp16"),
        C("fp32                    [17,4,128]", x="fp32", z="fp32", w="fp32"),
        C("bf16 x,z fp32 w -> bf16 [17,4,128]", w="fp32"),
        C("fp32 x bf16 z -> fp16   [17,4,128]", x="fp32", z="bf16", w="fp32", out="fp16"),
        C("bf16 -> fp32 out        [17,4,128]", out="fp32"),
        C("no gate bf16            [17,4,128]", gate="none"),
        C("no gate fp32            [33,96]", shape=(33, 96), x="fp32", w="fp32", gate="none"),
        C("1 + w (offset 1)        [17,4,128]", weight_offset=1.0),
        C("odd D=7, T=3            [3,5,7]", shape=(3, 5, 7)),
        C("D=1, T=1                [1,1,1]", shape=(1, 1, 1), x="fp32", z="fp32", w="fp32"),
        C("D=1000                  [5,2,1000]", shape=(5, 2, 1000), w="fp32"),
        C("2-D rows                [1000,64]", shape=(1000, 64)),
        C("group_size=128          [9,4*128]", shape=(9, 512), group_size=128),
        C("strided z (qkvz slice)  [17,4,128]", strided_z=True),
        C("strided x, z, out       [17,4,128]", strided_x=True, strided_z=True, strided_out=True, gate="after"),
        C("in place (out is x)     [17,4,128]", inplace=True),
    ]


def _wide_view(rng, shape, dtype, extra_cols, col0, fill=None):
    """A [.., last] view that is a column slice of a wider [T, ...] buffer (like z inside a
    fused qkvz projection): returns (view, base)."""
    from .testing import randn

    T, rest = shape[0], shape[1:]
    inner = int(np.prod(rest))
    base = randn(rng, (T, inner + extra_cols), dtype) if fill is None else np.full((T, inner + extra_cols), fill, dtype)
    view = base[:, col0:col0 + inner].reshape((T,) + tuple(rest))
    assert not view.flags.c_contiguous
    return view, base


def run_case(case, backend: str, seed: int = 0):
    """Run one case on ``backend`` ('cpu', 'gpu:N'); returns (ok, detail)."""
    import gatednorm
    from . import _dtypes
    from .testing import mirror, poison_value, randn, to_numpy

    rng = np.random.default_rng(seed)
    dx, dz, dw, do = (_dtypes.to_numpy_dtype(d) for d in (case.x, case.z, case.w, case.out))
    D = case.group_size or case.shape[-1]
    if case.strided_x:
        x, xbase = _wide_view(rng, case.shape, dx, 64, 32)
    else:
        x, xbase = randn(rng, case.shape, dx), None
    z = zbase = None
    if case.gate != "none":
        if case.strided_z:
            z, zbase = _wide_view(rng, case.shape, dz, 3 * int(np.prod(case.shape[1:])), 2 * int(np.prod(case.shape[1:])))
        else:
            z = randn(rng, case.shape, dz, scale=2.0)
    w = randn(rng, (D,), dw, scale=0.5, shift=0.0 if case.weight_offset else 1.0)
    kw = dict(norm_before_gate=case.gate != "after", activation=case.activation, weight_offset=case.weight_offset,
              group_size=case.group_size)
    ref = gatednorm.reference.rmsnorm_gated(x, z, w, **kw)
    pv = poison_value(do)
    if case.inplace:
        out_np, obase = x, xbase
        assert dx == do
    elif case.strided_out:
        out_np, obase = _wide_view(rng, case.shape, do, 16, 8, fill=pv)
    else:
        out_np, obase = np.full(case.shape, pv, do), None
    be = "numpy" if backend == "cpu" else backend  # CPU through numpy; GPUs through DeviceArray
    dev = lambda a, b: None if a is None else mirror(a, b, be)  # noqa: E731
    xd, zd, wd = dev(x, xbase), dev(z, zbase), dev(w, None)
    outd = xd if case.inplace else dev(out_np, obase)
    res = gatednorm.rmsnorm_gated(xd, zd, wd, out=outd, **kw)
    if res is not outd:
        return False, "returned a different object than out"
    got = to_numpy(outd)
    cmp = gatednorm.reference.compare(got, ref, do)
    if not cmp.ok:
        return False, repr(cmp)
    if case.strided_out:  # elements of the wider buffer outside the view stay poisoned
        full = obase if be == "numpy" else outd.base.numpy()
        mask = np.ones(full.shape, bool)
        mask[:, 8:8 + int(np.prod(case.shape[1:]))] = False
        if not np.all(np.isnan(full[mask].astype(np.float32))):
            return False, "wrote outside the out view"
    return True, "max %.2f ulp" % cmp.max_ulp


# The other ops: one representative case each (their full sweeps are the pytest suite).
def _fp8_close(q, s, y_ref, s_ref):
    """(ok, detail): our scales within 2^-20 of the reference's, and q * s within one e4m3
    quantum of the reference's dequantized value (codes may differ by one step only where
    y / s sits on a rounding boundary)."""
    s = np.asarray(s, np.float64)
    if not np.allclose(s, s_ref, rtol=2.0 ** -20, atol=0):
        return False, "scales differ from the reference by up to %.3g relative" % float(np.max(np.abs(s / s_ref - 1)))
    G = y_ref.shape[-1] // s.shape[-1]
    scale = np.repeat(s, G, axis=-1)
    got = np.asarray(q).astype(np.float64) * scale
    v = np.abs(y_ref / scale)
    quantum = np.exp2(np.floor(np.log2(np.maximum(v, 2.0 ** -6))) - 3) * scale  # e4m3: 3 mantissa bits
    err = np.abs(got - y_ref)
    if not np.all(err <= quantum * (1 + 1e-6)):
        return False, "q * scale off by %.2f quanta" % float(np.max(err / quantum))
    return True, "max %.2f quanta" % float(np.max(err / quantum))


def _op_cases():
    import gatednorm
    from . import _dtypes
    from .testing import mirror, randn, to_numpy

    bf16 = _dtypes.bfloat16

    def put(a, backend):
        return a if backend == "cpu" else mirror(a, None, backend)

    def gated_fp8(backend, rng):
        x, z = randn(rng, (17, 4, 128), bf16), randn(rng, (17, 4, 128), bf16, scale=2.0)
        w = randn(rng, (128,), bf16, scale=0.5, shift=1.0)
        q, sc = gatednorm.rmsnorm_gated_fp8(put(x, backend), put(z, backend), put(w, backend))
        _, s_ref, y_ref = gatednorm.reference.rmsnorm_gated_fp8(x, z, w)
        return _fp8_close(to_numpy(q), to_numpy(sc), y_ref.reshape(17, 512), s_ref)

    def add_norm_fp8(backend, rng):
        x, r = randn(rng, (9, 2048), bf16), randn(rng, (9, 2048), bf16)
        w = randn(rng, (2048,), bf16, scale=0.5, shift=1.0)
        rd = put(r.copy(), backend)
        out = gatednorm.add_rmsnorm(put(x, backend), rd, put(w, backend), fp8=True)
        ref = gatednorm.reference.add_rmsnorm(x, r, w, fp8=True)
        if to_numpy(rd).tobytes() != ref["residual"].tobytes():
            return False, "the stored residual differs from x + residual rounded once"
        cmp = gatednorm.reference.compare(to_numpy(out.y), ref["y"], bf16)
        if not cmp.ok:
            return False, "y: %r" % cmp
        return _fp8_close(to_numpy(out.q), to_numpy(out.scales), ref["y"], ref["scales"])

    def group_quant(backend, rng):
        x = randn(rng, (9, 1024), bf16, scale=3.0)
        q, sc = gatednorm.group_quant_fp8(put(x, backend))
        _, s_ref = gatednorm.reference.group_quant_fp8(x)
        return _fp8_close(to_numpy(q), to_numpy(sc), x.astype(np.float64), s_ref)

    def w4a16(backend, rng):
        W = rng.standard_normal((96, 256)).astype(np.float32)
        wt = gatednorm.W4A16Weight.from_float(W, 64, False)
        a = randn(rng, (5, 256), bf16)
        if backend != "cpu":
            wt = wt.to(backend)
        out = to_numpy(gatednorm.w4a16_matmul(put(a, backend), wt))
        ref = gatednorm.reference.w4a16_matmul(a, wt.q, wt.scales, wt.zeros, dtype=bf16)
        tol = gatednorm.reference.w4a16_tolerance(a, wt.q, wt.scales, wt.zeros, None, bf16, ref=ref)
        err = np.abs(out.astype(np.float64) - ref)
        if not np.all(err <= tol):
            return False, "%.2f of the tolerance" % float(np.max(err / tol))
        return True, "%.2f of the tolerance" % float(np.max(err / tol))

    def allreduce(backend, rng):
        import threading

        if backend != "cpu":
            return None, "cpu only here (ranks as streams: the test suite)"
        W = 2
        groups = gatednorm.AllReduceGroup.in_process(W, "cpu", max_tokens=16, hidden=256, dtype="bfloat16")
        xs = [randn(rng, (5, 256), bf16) for _ in range(W)]
        r, w = randn(rng, (5, 256), bf16), randn(rng, (256,), bf16, scale=0.5, shift=1.0)
        rs = [r.copy() for _ in range(W)]
        outs = [None] * W
        th = [threading.Thread(target=lambda i=i: outs.__setitem__(i, groups[i].add_rmsnorm(xs[i], rs[i], w)))
              for i in range(W)]
        for t in th:
            t.start()
        for t in th:
            t.join(60)
        x = (xs[0].astype(np.float32) + xs[1].astype(np.float32)).astype(bf16)  # rank order, rounded once
        r2 = r.copy()
        want = gatednorm.add_rmsnorm(x, r2, w)
        for g in groups:
            g.close()
        same = all(o is not None and o.y.tobytes() == want.y.tobytes() for o in outs)
        same = same and all(rr.tobytes() == r2.tobytes() for rr in rs)
        return same, "ranks equal the unfused op bit for bit" if same else "a rank differs from the unfused op"

    return [("rmsnorm_gated_fp8 e4m3fn G=128 [17,4,128]", gated_fp8),
            ("add_rmsnorm + fp8 + bf16 [9,2048]", add_norm_fp8),
            ("group_quant_fp8 G=128     [9,1024]", group_quant),
            ("w4a16 G=64 asym bf16      [5,256]x[256,96]", w4a16),
            ("allreduce + add_rmsnorm W=2 [5,256]", allreduce)]


def run_check(backends=None, verbose=False, stream=None) -> int:
    """Run check_cases() on each backend; print a table; return the number of failures."""
    from .testing import available_backends

    stream = stream or sys.stdout

    backends = backends or available_backends()
    # (name, run(backend) -> (ok, detail)): gated RMSNorm's sweep, then one case of each other op
    # (ok None: not run on that backend, with the reason).
    runs = [(c.name, (lambda b, c=c: run_case(c, b))) for c in check_cases()]
    runs += [(name, (lambda b, f=f: f(b, np.random.default_rng(0)))) for name, f in _op_cases()]
    w0 = max(len(name) for name, _ in runs)
    colw = 18
    print("%-*s  %s" % (w0, "case", "  ".join("%-*s" % (colw, b) for b in backends)), file=stream)
    print("-" * (w0 + (colw + 2) * len(backends)), file=stream)
    failures, details, total = 0, [], 0
    for name, run in runs:
        cells = []
        for b in backends:
            try:
                ok, detail = run(b)
            except Exception as e:  # a crash is a failure, with its message
                ok, detail = False, "%s: %s" % (type(e).__name__, e)
                if verbose:
                    detail += "\n" + traceback.format_exc()
            if ok is None:
                cells.append("-")
                continue
            total += 1
            failures += not ok
            cells.append(("pass " + detail.replace("max ", "")) if ok else "FAIL")
            if not ok:
                details.append("%s [%s]: %s" % (name.split("  ")[0].strip(), b, detail))
        # a cell wider than the column is printed whole (the detail is the result), the row shifts
        print(("%-*s  %s" % (w0, name, "  ".join("%-*s" % (colw, s) for s in cells))).rstrip(), file=stream)
    print("-" * (w0 + (colw + 2) * len(backends)), file=stream)
    print("%d/%d passed on %s" % (total - failures, total, ", ".join(backends)), file=stream)
    for d in details:
        print("  " + d, file=stream)
    return failures


def _cmd_check(args) -> int:
    import gatednorm
    from .testing import available_backends

    try:
        avail = available_backends()
    except gatednorm.GatedNormError as e:
        print("gatednorm check: %s" % e, file=sys.stderr)
        return 2
    if args.backend == "all":
        backends = avail
    elif args.backend == "gpu":
        backends = [b for b in avail if b != "cpu"]
        if not backends:
            print("gatednorm check: %s" % _no_gpu_reason(gatednorm), file=sys.stderr)
            return 2
    elif args.backend not in avail:  # gpu:N that this process cannot see ("cpu" always is)
        print("gatednorm check: %s is not visible: %s" % (args.backend, _no_gpu_reason(gatednorm) if avail == ["cpu"] else
                                                          "GPUs here: " + ", ".join(b for b in avail if b != "cpu")),
              file=sys.stderr)
        return 2
    else:
        backends = [args.backend]
    print(gatednorm.build_info())  # "gatednorm VERSION; backends; ...": the version once
    failures = run_check(backends, verbose=args.verbose)
    if args.backend == "all" and backends == ["cpu"]:
        # say what was not checked: "all" on a machine without a visible GPU is the CPU only
        print("GPU backend not checked: %s" % _no_gpu_reason(gatednorm))
    return 1 if failures else 0


def _no_gpu_reason(gatednorm) -> str:
    """Why `check` ran no GPU case: no GPU backend in this build, or none visible."""
    from . import _ffi

    info = gatednorm.build_info()
    if int(_ffi.lib().gatednorm_gpu_device_type()) == 0:
        return "this build has no GPU backend (%s)" % info
    return "no GPU visible to this process (%s)" % info


def _backend_arg(text: str) -> str:
    """check --backend: 'all', 'cpu', 'gpu' or 'gpu:N', refused at parse time otherwise."""
    t = text.strip().lower()
    if t in ("all", "cpu", "gpu"):
        return t
    if t.startswith("gpu:") and t[4:].isdigit():
        return "gpu:%d" % int(t[4:])
    raise argparse.ArgumentTypeError("expected 'all', 'cpu', 'gpu' or 'gpu:N', got %r" % text)


# ----------------------------------------------------------------------------------- bench
def _add_bench(sub) -> None:
    err = None
    try:
        from . import bench  # the benchmarking module; optional here
    except ImportError as e:
        bench, err = None, e
    if bench is not None and hasattr(bench, "add_parser"):
        bench.add_parser(sub)  # registers "bench" itself
        return
    help_ = "time ops against installed peers (protocol: docs/bench.md; every run: docs/perf-log.md)"
    if bench is not None and hasattr(bench, "add_arguments") and hasattr(bench, "main"):
        p = sub.add_parser("bench", help=help_, description=(bench.__doc__ or "").strip().split("\n")[0])
        bench.add_arguments(p)
        p.set_defaults(func=bench.main)
        return
    p = sub.add_parser("bench", help=help_ + " (not available in this install)")
    p.set_defaults(func=lambda args: _bench_missing(err))


def _bench_missing(err) -> int:
    print("gatednorm bench: not available (%s)" % (err or "gatednorm.bench has no add_parser()"), file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gatednorm", description="gatednorm: fused norm/quant GPU kernels, C ABI.")
    sub = ap.add_subparsers(dest="command", metavar="command")
    p = sub.add_parser("info", help="version, build info, backends and devices")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("check", help="run every op on every backend against the float64 reference")
    p.add_argument("--backend", default="all", type=_backend_arg, help="'all' (default), 'cpu', 'gpu' or 'gpu:N'")
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of crashed cases")
    p.set_defaults(func=_cmd_check)
    p = sub.add_parser("cmake-dir", help="print the folder holding gatednormConfig.cmake")
    p.set_defaults(func=_cmd_cmake_dir)
    p = sub.add_parser("pkgconfig-dir", help="print the folder holding gatednorm.pc (for PKG_CONFIG_PATH)")
    p.set_defaults(func=_cmd_pkgconfig_dir)
    _add_bench(sub)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    from ._ffi import GatedNormError

    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # pragma: no cover
        return 0
    except GatedNormError as e:  # the library missing or refusing: its message, not a traceback
        print("gatednorm %s: %s" % (args.command, e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
