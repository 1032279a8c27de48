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
        return 2  # as check: no library to speak of
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


def _print_dir(what, path) -> int:
    """Print an installed package's folder; where it is not there (a source tree on
    PYTHONPATH, no install), say so on stderr and exit 2 rather than print a dead path."""
    import os

    if not os.path.isdir(path):
        print("gatednorm: no %s at %s (this package is not an installed one: pip install it, or use the "
              "cmake --install prefix)" % (what, path), file=sys.stderr)
        return 2
    print(path)
    return 0


def _cmd_cmake_dir(args) -> int:
    import gatednorm

    return _print_dir("CMake package folder", gatednorm.cmake_dir())


def _cmd_pkgconfig_dir(args) -> int:
    import gatednorm

    return _print_dir("pkg-config folder", gatednorm.pkgconfig_dir())


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


# The other ops: a few cases each over the options that change what a kernel writes (FP8
# formats, scale formats and layouts, groups, gate orders, the copy and quantize_rounded,
# in place / out of place, W4A16 symmetry, groups and M), outputs poisoned first, each output's
# dtype and shape checked, q held to half an FP8 quantum as the test-suite holds it (their
# full sweeps are the pytest suite).
def _quant_ok(q, s_raw, y_target, s_ref, fmt, fp8_max, sf, G, shape):
    """(ok, detail) of an op's FP8 outputs: q's dtype and shape, the scales by their format
    (gatednorm.testing.fp8_scales_ok), the codes within half a quantum of clamp(y / s)."""
    from . import _dtypes
    from .testing import fp8_codes_ok, fp8_scales_ok, scale_values

    want = getattr(_dtypes, "float8_" + fmt)
    if q.dtype != want or q.shape != tuple(shape):
        return False, "q: %s %s, expected %s %s" % (q.dtype, q.shape, np.dtype(want), tuple(shape))
    K, T = shape[-1] // G, int(np.prod(shape[:-1]))
    sv = scale_values(s_raw, sf, K).reshape(T, K)
    ok, detail = fp8_scales_ok(sv, np.asarray(s_ref).reshape(T, K), sf)
    if not ok:
        return False, "scales: " + detail
    ok, detail = fp8_codes_ok(q.reshape(T, -1), np.asarray(y_target).reshape(T, -1), sv, fmt, fp8_max, G)
    return (True, "half a quantum") if ok else (False, "q: " + detail)


def _same_array(got, want_dtype, want_shape, name):
    got = np.asarray(got)
    if got.dtype != want_dtype or got.shape != tuple(want_shape):
        return "%s: %s %s, expected %s %s" % (name, got.dtype, got.shape, np.dtype(want_dtype), tuple(want_shape))
    return None


def _op_cases():
    import gatednorm
    from . import _dtypes
    from .testing import POISON_VALUE, mirror, new_scales, poison_codes, randn, to_numpy

    bf16 = _dtypes.bfloat16
    reference = gatednorm.reference

    def put(a, backend, base=None):
        return a if backend == "cpu" else mirror(a, base, backend)

    def scales_out(tok, K, sf, layout, backend):
        view, base = new_scales(tok, (K + 3) // 4 if sf == "e8m0_packed" else K, sf, layout)
        return put(view, backend, base)

    def gated_fp8(fmt="e4m3fn", fp8_max=None, sf="fp32", layout="row", G=128, gate="before", act="silu", offset=0.0,
                  copy=None, rounded=False):
        def run(backend, rng):
            T, H, D = 17, 4, 128
            x = randn(rng, (T, H, D), bf16)
            z = None if gate == "none" else randn(rng, (T, H, D), bf16, scale=2.0)
            w = randn(rng, (D,), bf16, scale=0.5, shift=0.0 if offset else 1.0)
            kw = dict(norm_before_gate=gate != "after", activation=act, weight_offset=offset, group_size=G, fp8_format=fmt,
                      fp8_max=fp8_max, scale_format=sf, quantize_rounded=rounded)
            q = put(poison_codes((T, H * D), fmt), backend)
            sc = scales_out((T,), H * D // G, sf, layout, backend)
            yc = None if copy is None else put(np.full((T, H, D), POISON_VALUE, _dtypes.to_numpy_dtype(copy)), backend)
            res = gatednorm.rmsnorm_gated_fp8(put(x, backend), None if z is None else put(z, backend), put(w, backend),
                                              q=q, scales=sc, y=yc, **kw)
            if res[0] is not q or res[1] is not sc or (copy is not None and res[2] is not yc):
                return False, "returned other objects than the outputs given"
            _, s_ref, y_ref = reference.rmsnorm_gated_fp8(x, z, w, copy_dtype=copy, **kw)
            y_ref = y_ref.reshape(T, H * D)
            if copy is not None:
                cmp = reference.compare(to_numpy(yc).reshape(T, H * D), y_ref, copy)
                if not cmp.ok:
                    return False, "copy: %r" % cmp
            target = y_ref.astype(_dtypes.to_numpy_dtype(copy or bf16)).astype(np.float64) if rounded else y_ref
            return _quant_ok(to_numpy(q), to_numpy(sc), target, s_ref, fmt, fp8_max, sf, G, (T, H * D))
        return run

    def add_norm(residual=True, in_place=True, fp8=True, y="bf16", fmt="e4m3fn", fp8_max=None, sf="fp32", layout="row",
                 G=128, offset=0.0, rounded=False, eps=1e-6):
        def run(backend, rng):
            T, Hd = 9, 2048
            x = randn(rng, (T, Hd), bf16)
            r = randn(rng, (T, Hd), bf16, scale=3.0) if residual else None
            w = randn(rng, (Hd,), bf16, scale=0.5, shift=0.0 if offset else 1.0)
            kw = dict(eps=eps, weight_offset=offset)
            if fp8:
                kw.update(fp8=True, group_size=G, fp8_format=fmt, fp8_max=fp8_max, scale_format=sf, quantize_rounded=rounded)
            args = {}
            if y:
                args["y_out"] = put(np.full((T, Hd), POISON_VALUE, _dtypes.to_numpy_dtype(y)), backend)
            if fp8:
                args["q"] = put(poison_codes((T, Hd), fmt), backend)
                args["scales"] = scales_out((T,), Hd // G, sf, layout, backend)
            rd = None if r is None else put(r.copy(), backend)
            if residual and not in_place:
                args["residual_out"] = put(np.full((T, Hd), POISON_VALUE, bf16), backend)
            if residual:
                out = gatednorm.add_rmsnorm(put(x, backend), rd, put(w, backend), y=bool(y), **args, **kw)
            else:
                out = gatednorm.rmsnorm(put(x, backend), put(w, backend), y=bool(y), **args, **kw)
            ref = reference.add_rmsnorm(x, r, w, y=bool(y), y_dtype=y, **kw)
            if residual:
                stored = to_numpy(args["residual_out"] if not in_place else rd)
                if not in_place and to_numpy(rd).tobytes() != r.tobytes():
                    return False, "residual changed though residual_out was given"
                if stored.tobytes() != ref["residual"].tobytes():
                    return False, "the stored residual differs from x + residual rounded once"
            if y:
                yv = to_numpy(out.y)
                bad = _same_array(yv, _dtypes.to_numpy_dtype(y), (T, Hd), "y")
                if bad:
                    return False, bad
                cmp = reference.compare(yv, ref["y"], y)
                if not cmp.ok:
                    return False, "y: %r" % cmp
            if not fp8:
                return True, "y as the reference"
            rdt = _dtypes.to_numpy_dtype(y) if y else bf16
            target = ref["y"].astype(rdt).astype(np.float64) if rounded else ref["y"]
            return _quant_ok(to_numpy(out.q), to_numpy(out.scales), target, ref["scales"], fmt, fp8_max, sf, G, (T, Hd))
        return run

    def group_quant(fmt="e4m3fn", sf="fp32", layout="row", G=128):
        def run(backend, rng):
            x = randn(rng, (9, 1024), bf16, scale=3.0)
            q = put(poison_codes((9, 1024), fmt), backend)
            sc = scales_out((9,), 1024 // G, sf, layout, backend)
            gatednorm.group_quant_fp8(put(x, backend), group_size=G, fp8_format=fmt, scale_format=sf, q=q, scales=sc)
            _, s_ref = reference.group_quant_fp8(x, group_size=G, fp8_format=fmt, scale_format=sf)
            return _quant_ok(to_numpy(q), to_numpy(sc), x.astype(np.float64), s_ref, fmt, None, sf, G, (9, 1024))
        return run

    def w4a16(M, K, N, G, symmetric):
        def run(backend, rng):
            W = rng.standard_normal((N, K)).astype(np.float32)
            wt = gatednorm.W4A16Weight.from_float(W, G, symmetric)
            a = randn(rng, (M, K), bf16)
            if backend != "cpu":
                wt = wt.to(backend)
            out = put(np.full((M, N), POISON_VALUE, bf16), backend)
            gatednorm.w4a16_matmul(put(a, backend), wt, out=out)
            got = to_numpy(out)
            bad = _same_array(got, bf16, (M, N), "out")
            if bad:
                return False, bad
            ref = reference.w4a16_matmul(a, wt.q, wt.scales, wt.zeros, dtype=bf16)
            tol = reference.w4a16_tolerance(a, wt.q, wt.scales, wt.zeros, None, bf16, ref=ref)
            err = np.abs(got.astype(np.float64) - ref)
            ok = bool(np.all(err <= tol))  # NaN (unwritten) fails
            return ok, "%.2f of the tolerance" % float(np.nanmax(err / tol))
        return run

    def allreduce(algorithm):
        def run(backend, rng):
            import threading

            if backend != "cpu":
                return None, "cpu only here (ranks as streams: the test suite)"
            W = 2
            groups = gatednorm.AllReduceGroup.in_process(W, "cpu", max_tokens=16, hidden=256, dtype="bfloat16",
                                                         algorithm=algorithm)
            xs = [randn(rng, (5, 256), bf16) for _ in range(W)]
            r, w = randn(rng, (5, 256), bf16), randn(rng, (256,), bf16, scale=0.5, shift=1.0)
            rs = [r.copy() for _ in range(W)]
            ys = [np.full((5, 256), POISON_VALUE, bf16) for _ in range(W)]
            th = [threading.Thread(target=lambda i=i: groups[i].add_rmsnorm(xs[i], rs[i], w, y_out=ys[i])) for i in range(W)]
            for t in th:
                t.start()
            for t in th:
                t.join(60)
            for g in groups:
                g.close()
            x = (xs[0].astype(np.float32) + xs[1].astype(np.float32)).astype(bf16)  # rank order, rounded once
            ref = reference.add_rmsnorm(x, r, w)
            for i in range(W):
                if rs[i].tobytes() != ref["residual"].tobytes():
                    return False, "rank %d's stored residual differs from the reference" % i
                cmp = reference.compare(ys[i], ref["y"], bf16)
                if not cmp.ok:
                    return False, "rank %d's y: %r" % (i, cmp)
            if ys[0].tobytes() != ys[1].tobytes():
                return False, "the ranks' y differ"
            return True, "ranks equal, as the reference"
        return run

    return [("rmsnorm_gated_fp8 e4m3fn G=128 row  [17,4,128]", gated_fp8()),
            ("  fnuz 224 ue8m0 col, x*sigmoid(z), 1+w", gated_fp8(fmt="e4m3fnuz", fp8_max=224.0, sf="ue8m0", layout="col",
                                                                gate="after", act="sigmoid", offset=1.0)),
            ("  e8m0 col_pad4 G=64, bf16 copy, rounded", gated_fp8(sf="e8m0", layout="col_pad4", G=64, copy="bf16", rounded=True)),
            ("  e8m0_packed G=256 (2 heads), no gate", gated_fp8(sf="e8m0_packed", layout="col_pad4", G=256, gate="none")),
            ("add_rmsnorm in place + fp8 + bf16 [9,2048]", add_norm()),
            ("  residual_out, fnuz ue8m0 col, 1+w, rounded", add_norm(in_place=False, fmt="e4m3fnuz", sf="ue8m0", layout="col",
                                                                    offset=1.0, rounded=True)),
            ("  y=False, e8m0_packed col_pad4 G=64, rounded", add_norm(y=None, sf="e8m0_packed", layout="col_pad4", G=64,
                                                                     rounded=True)),
            ("rmsnorm fp32 y, eps 1e-5        [9,2048]", add_norm(residual=False, fp8=False, y="fp32", eps=1e-5)),
            ("group_quant_fp8 G=128 row       [9,1024]", group_quant()),
            ("  fnuz e8m0_packed col_pad4 G=64", group_quant(fmt="e4m3fnuz", sf="e8m0_packed", layout="col_pad4", G=64)),
            ("w4a16 G=64 asym   [5,256]x[256,96]", w4a16(5, 256, 96, 64, False)),
            ("  G=128 sym       [1,512]x[512,64]", w4a16(1, 512, 64, 128, True)),
            ("  per-channel asym [33,256]x[256,80]", w4a16(33, 256, 80, None, False)),
            ("allreduce + add_rmsnorm W=2 one-shot [5,256]", allreduce("one_shot")),
            ("  two-shot", allreduce("two_shot"))]


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
    from . import _ffi

    print(gatednorm.build_info())  # "gatednorm VERSION; backends; ...": the version once
    print("library: %s" % _ffi.library_path())  # which file was checked (a stray GATEDNORM_LIBRARY shows)
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
    from . import __version__

    ap = argparse.ArgumentParser(prog="gatednorm", description="gatednorm: fused norm/quant GPU kernels, C ABI.")
    # the package's version without loading the library (`info` shows the library's)
    ap.add_argument("--version", action="version", version="gatednorm (python) %s" % __version__)
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
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's 128 + SIGINT, not a traceback
        print("gatednorm %s: interrupted" % args.command, file=sys.stderr)
        return 130
    except GatedNormError as e:  # the library missing or refusing: its message, not a traceback
        print("gatednorm %s: %s" % (args.command, e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
