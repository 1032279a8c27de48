"""scripts/pdl_order_check.py, the guard CI (on the PTX) and gpu_check.sh (on the SASS) run so
that no PDL kernel touches memory before its wait or reads through ld.global.nc (session 35:
ptxas issued the W4A16 lean kernels' first loads above `if (p.pdl) griddepcontrol.wait`).
Listings shaped like nvdisasm's, cuobjdump's and nvcc -ptx's, each rule shown to fire and
to stay quiet on the same listing put right."""
import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "pdl_order_check.py"


@pytest.fixture(scope="module")
def check():
    if not SCRIPT.exists():
        pytest.skip("scripts/ is not beside the tests (an installed copy of the suite)")
    spec = importlib.util.spec_from_file_location("pdl_order_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sass(name, *instructions, header="nvdisasm"):
    head = (".text.%s:" % name) if header == "nvdisasm" else ("\tFunction : %s" % name)
    lines = [head] + ["        /*%04x*/                   %s ;" % (16 * i, ins) for i, ins in enumerate(instructions)]
    return "\n".join(lines) + "\n"


def run(check, tmp_path, text, suffix=".sass"):
    path = tmp_path / ("listing" + suffix)
    path.write_text(text)
    return check.main(["pdl_order_check.py", str(path)])


@pytest.mark.parametrize("header", ["nvdisasm", "cuobjdump"])
def test_sass_rules(check, tmp_path, capsys, header):
    ok = sass("k_ok", "LDC R1, c[0x0][0x28]", "ACQBULK", "LDG.E.128 R4, desc[UR4][R2.64]", "STG.E [R6.64], R4",
              header=header)
    assert run(check, tmp_path, ok) == 0
    assert "1 kernels with a wait, 0 with" in capsys.readouterr().out
    early = sass("k_early", "@P1 LDG.E.NA.LTC256B.128 R36, desc[UR8][R4.64]", "@!P1 BRA `(.L_x_1)", "ACQBULK", header=header)
    assert run(check, tmp_path, ok + early) == 1
    out = capsys.readouterr().out
    assert "k_early: 1 global memory instruction(s) before the PDL wait" in out and "k_ok" not in out
    for op in ("REDG.E.ADD.F32.FTZ.RN.STRONG.GPU desc[UR4][R2.64], R5", "STG.E [R2.64], R0", "ATOMG.E.ADD PT, R0, desc[UR4][R2.64], R5"):
        assert run(check, tmp_path, sass("k_op", op, "ACQBULK", header=header)) == 1, op
    capsys.readouterr()
    nc = sass("k_nc", "ACQBULK", "LDG.E.128.CONSTANT R40, desc[UR8][R60.64]", header=header)
    assert run(check, tmp_path, nc) == 1
    assert "k_nc: 1 non-coherent load(s)" in capsys.readouterr().out
    # Shared memory and constant-bank loads are no global access; a kernel without a wait is
    # only counted, whatever it loads; no kernel with a wait at all fails the check.
    quiet = sass("k_shared", "LDS R6, [R55]", "STS [R0], R4", "LDC R2, c[0x0][0x210]", "ACQBULK", header=header)
    unwaited = sass("k_plain", "LDG.E.128.CONSTANT R4, desc[UR4][R2.64]", header=header)
    assert run(check, tmp_path, quiet + unwaited) == 0
    assert "1 kernels with a wait, 0 with a memory access before it or a non-coherent load; 1 without" in capsys.readouterr().out
    assert run(check, tmp_path, unwaited) == 1


PTX_HEAD = """.version 9.0
.target sm_90a
.address_size 64
"""


def ptx(name, *body):
    return ".visible .entry %s(\n\t.param .align 8 .b8 %s_param_0[120]\n)\n{\n%s\n}\n" % (
        name, name, "\n".join("\t" + b for b in body))


def test_ptx_rules(check, tmp_path, capsys):
    wait = ["// begin inline asm", "griddepcontrol.wait;", "// end inline asm"]
    ok = ptx("k_ok", "ld.param.u64 %rd1, [k_ok_param_0];", *wait, "{", ".reg .pred q;", "setp.ne.b32 q, %r4, 0;",
             "@q ld.global.L1::no_allocate.L2::256B.v4.u32 {%r1, %r2, %r3, %r5}, [%rd1];", "}",
             "ld.shared.f32 %f1, [%r9];", "st.global.u16 [%rd2], %rs1;", "ret;")
    assert run(check, tmp_path, PTX_HEAD + ok, ".ptx") == 0
    capsys.readouterr()
    nc = ptx("k_nc", *wait, "ld.global.nc.v4.u32 {%r1, %r2, %r3, %r4}, [%rd5];", "ret;")
    early = ptx("k_early", "ld.u32 %r1, [%rd3];", *wait, "ret;")
    assert run(check, tmp_path, PTX_HEAD + ok + nc + early, ".ptx") == 1
    out = capsys.readouterr().out
    assert "k_nc: 1 non-coherent load(s)" in out and "k_early: 1 global memory instruction(s) before the PDL wait" in out
    assert "3 kernels with a wait, 2 with" in out
    plain = ptx("k_plain", "ld.global.nc.v4.u32 {%r1, %r2, %r3, %r4}, [%rd5];", "ret;")  # no wait: not a PDL kernel
    assert run(check, tmp_path, PTX_HEAD + ok + plain, ".ptx") == 0
