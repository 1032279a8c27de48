"""The command line: info, check (and that check detects failures), cmake-dir, pkgconfig-dir, bench hook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gatednorm
from gatednorm import cli


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert gatednorm.version() in out and gatednorm.build_info() in out
    assert "backends:" in out and "cpu" in out
    # The GPU flavour (issue #15): the library's backend, and the wheel's _build.json if any.
    flavour = {0: "OFF", 2: "CUDA", 10: "HIP"}[int(gatednorm._ffi.lib().gatednorm_gpu_device_type())]
    assert "gpu build:  %s (library)" % flavour in out
    wb = gatednorm.wheel_build()
    if wb is not None:
        assert wb["gpu"] in ("CUDA", "HIP", "OFF") and "wheel: gpu=%s" % wb["gpu"] in out
    for i in range(gatednorm.device_count()):
        assert gatednorm.device_name(i) in out


def test_check_cpu(capsys):
    assert cli.main(["check", "--backend", "cpu"]) == 0
    out = capsys.readouterr().out
    n = len(cli.check_cases()) + len(cli._op_cases())  # every op's case runs on the CPU
    assert "%d/%d passed" % (n, n) in out and "FAIL" not in out
    for name, _ in cli._op_cases():
        assert name in out


@pytest.mark.parametrize("op", ["group_quant_fp8", "rmsnorm_gated_fp8"])
def test_check_fails_a_wrong_fp8_op(monkeypatch, capsys, op):
    """The other ops' cases can fail: a quantizer whose scales are 1% off is caught."""
    real = getattr(gatednorm, op)

    def off(*args, **kw):
        q, s = real(*args, **kw)[:2]
        s[...] = s * 1.01
        return q, s

    monkeypatch.setattr(gatednorm, op, off)
    assert cli.main(["check", "--backend", "cpu"]) != 0
    assert "FAIL" in capsys.readouterr().out


def test_check_reports_failures(monkeypatch, capsys):
    real = gatednorm.rmsnorm_gated

    def off_by_a_bit(*args, **kw):  # a kernel with a wrong eps
        kw["eps"] = 0.5
        return real(*args, **kw)

    monkeypatch.setattr(gatednorm, "rmsnorm_gated", off_by_a_bit)
    assert cli.main(["check", "--backend", "cpu"]) != 0
    out = capsys.readouterr().out
    assert "FAIL" in out


def test_check_reports_unwritten_outputs(monkeypatch, capsys):
    def writes_nothing(x, z=None, weight=None, *, out=None, **kw):
        return out

    monkeypatch.setattr(gatednorm, "rmsnorm_gated", writes_nothing)
    assert cli.main(["check", "--backend", "cpu"]) != 0
    assert "nan=" in capsys.readouterr().out


def test_check_gpu_backends(requires_gpu, capsys):
    assert cli.main(["check", "--backend", "gpu"]) == 0


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == "gatednorm (python) %s" % gatednorm.__version__


def test_cmake_dir(capsys):
    """An installed package prints its folder; a source tree on PYTHONPATH (no such folder)
    says so and exits 2 (it printed a dead path with exit 0)."""
    there = os.path.isdir(gatednorm.cmake_dir())
    assert cli.main(["cmake-dir"]) == (0 if there else 2)
    out = capsys.readouterr()
    if there:
        assert out.out.strip() == gatednorm.cmake_dir()
    else:
        assert out.out == "" and "no CMake package folder at %s" % gatednorm.cmake_dir() in out.err


def test_pkgconfig_dir(capsys):
    there = os.path.isdir(gatednorm.pkgconfig_dir())
    assert cli.main(["pkgconfig-dir"]) == (0 if there else 2)
    out = capsys.readouterr()
    if not there:
        assert out.out == "" and "no pkg-config folder" in out.err
    assert Path(gatednorm.pkgconfig_dir()) == Path(gatednorm.cmake_dir()).parent.parent / "pkgconfig"  # lib/pkgconfig beside lib/cmake
    if there:
        assert out.out.strip() == gatednorm.pkgconfig_dir()


def test_bench_hook(capsys):
    parser = cli.build_parser()
    sub = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0]
    assert {"info", "check", "cmake-dir", "pkgconfig-dir", "bench"} <= set(sub.choices)
    try:
        import gatednorm.bench as bench
    except ImportError:
        assert cli.main(["bench"]) == 2
        assert "not available" in capsys.readouterr().err
        return
    # the subcommand is wired to the module: --help lists its options
    with pytest.raises(SystemExit) as ei:
        cli.main(["bench", "--help"])
    assert ei.value.code == 0
    helptext = capsys.readouterr().out
    if hasattr(bench, "add_arguments"):
        probe = cli.argparse.ArgumentParser()
        bench.add_arguments(probe)
        for a in probe._actions:
            for opt in a.option_strings:
                assert opt in helptext


def test_bench_hook_without_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gatednorm.bench", None)  # import fails
    monkeypatch.delattr(gatednorm, "bench", raising=False)
    assert cli.main(["bench"]) == 2
    assert "not available" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_python_dash_m():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(gatednorm.__file__).parents[1])] + sys.path))
    r = subprocess.run([sys.executable, "-m", "gatednorm", "info"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert gatednorm.version() in r.stdout


def test_check_prints_whole_results(capsys):
    """A result wider than its column is printed whole (it was cut at 18 characters)."""
    assert cli.main(["check", "--backend", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "pass ranks equal, as the reference" in out
    assert "of the tolerance" in out


def test_check_says_when_the_gpu_was_not_checked(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    if gatednorm.device_count() == 0:
        assert "GPU backend not checked: " in out
        why = "no GPU backend" if int(gatednorm._ffi.lib().gatednorm_gpu_device_type()) == 0 else "no GPU visible"
        assert why in out
    else:
        assert "not checked" not in out and "gpu:0" in out


def test_check_names_a_gpu_it_cannot_see(capsys):
    """--backend gpu:N past the visible GPUs is refused as --backend gpu is without any (it ran
    every case and printed a FAIL row and a traceback line for each)."""
    n = gatednorm.device_count()
    assert cli.main(["check", "--backend", "gpu:%d" % n]) == 2
    cap = capsys.readouterr()
    assert "gpu:%d is not visible" % n in cap.err
    assert "FAIL" not in cap.out and "passed on" not in cap.out


def test_check_header_names_the_version_once(capsys):
    assert cli.main(["check", "--backend", "cpu"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.count("gatednorm %s" % gatednorm.version()) == 1, first


@pytest.mark.parametrize("value", ["bogus", "gpu:", "gpu:x", "cpu0", "gpu:-1"])
def test_check_refuses_an_unknown_backend_at_parse(value, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["check", "--backend", value])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "--backend" in err and repr(value) in err


def test_check_accepts_backend_spellings():
    for text, want in [("all", "all"), ("CPU", "cpu"), ("gpu", "gpu"), ("gpu:0", "gpu:0"), ("gpu:01", "gpu:1")]:
        assert cli._backend_arg(text) == want


@pytest.mark.parametrize("command", [["bench", "--cpu", "--quick"], ["check"], ["info"]])
def test_a_library_that_cannot_load_is_a_message_not_a_traceback(tmp_path, command):
    not_a_library = tmp_path / "libgatednorm.so"
    not_a_library.write_text("not an ELF file")
    env = dict(os.environ, GATEDNORM_LIBRARY=str(not_a_library),
               PYTHONPATH=os.pathsep.join([str(Path(gatednorm.__file__).parents[1])] + sys.path))
    r = subprocess.run([sys.executable, "-m", "gatednorm"] + command, capture_output=True, text=True, env=env,
                       timeout=120)
    assert "Traceback" not in r.stderr + r.stdout
    if command[0] == "info":  # info reports what it can without the library, and fails
        assert r.returncode == 2 and "not loaded: cannot load %s" % not_a_library in r.stdout, r.stdout  # as check
        return
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "gatednorm %s: cannot load %s" % (command[0], not_a_library) in r.stderr
    assert "[library not loaded]" in r.stderr


def test_interrupt_is_one_line(monkeypatch, capsys):
    """Ctrl-C in a command: one line and 130 (128 + SIGINT), not a traceback."""
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_info", interrupted)
    assert cli.main(["info"]) == 130
    assert capsys.readouterr().err.strip() == "gatednorm info: interrupted"
