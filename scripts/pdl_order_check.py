"""Check that no PDL kernel can touch global memory before its programmatic-dependent-launch wait.

A kernel launched with PDL may start while the previous grid still writes; it must not read
(or write) global memory before `griddepcontrol.wait` (SASS `ACQBULK`).  Session 35 found the
W4A16 lean kernels issuing their first weight, scale and activation loads, all
`ld.global.nc` (`.CONSTANT` in SASS), above `if (p.pdl) griddepcontrol.wait`: the compiler
treats a non-coherent load as a read of memory nothing writes while the kernel runs, so it
may move one above a wait.  For every kernel with at least one ACQBULK this reports:
  - a global memory instruction (load, store, atomic, reduction, bulk / tensor copy,
    prefetch, texture or surface access) before the first ACQBULK in the listing;
  - any non-coherent global load (`LDG...CONSTANT`) anywhere in it: nothing keeps the
    compiler from issuing one before the wait, so a PDL kernel must not have one.
It reads the listing in address order, not by paths: a wait inside a branch with memory
instructions on another path before a later wait is not seen (the library's waits are at
the top of each kernel, or under a uniform `if (pdl)` with no memory access before it).
Kernels without a wait are not PDL kernels and are only counted.  Exit status 1 on any
finding, or if no kernel has a wait.

    python3 scripts/pdl_order_check.py LIB.so | FILE.cubin | FILE.sass
(a .so or .cubin goes through `cuobjdump --dump-sass`; a text file is a cuobjdump or
`nvdisasm -c` listing.)
"""
import re
import subprocess
import sys

# Global-memory opcodes (LDC, constant-bank loads, and LDS / STS, shared memory, are not).
MEMORY_OP = re.compile(
    r"(LDG|LDGMC|STG|LD|ST|ATOM|ATOMG|RED|REDG|LDGSTS|UBLKCP|UBLKRED|UBLKPF|UTMALDG|UTMASTG|UTMAREDG|UTMAPF|"
    r"UTMACCTL|CCTL|TLD|TEX|TLD4|TMML|TXD|TXQ|SULD|SUST|SUATOM|SURED)(\.[.\w]*)?")
NONCOHERENT_LOAD = re.compile(r"LDG(\.[.\w]*)?\.CONSTANT(\.[.\w]*)?")
INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(.*?);")
HEADER = re.compile(r"(?:Function : (\S+))|(?:^\s*\.text\.(\S+):)")


def kernels(text):
    """(name, [instruction text, ...]) for each function of a SASS listing, in order."""
    name, body = None, []
    for line in text.splitlines():
        h = HEADER.search(line)
        if h:
            if name is not None:
                yield name, body
            name, body = h.group(1) or h.group(2), []
            continue
        m = INSTRUCTION.search(line)
        if m and name is not None:
            body.append(m.group(1).strip())
    if name is not None:
        yield name, body


def opcode(ins):
    """The instruction's opcode, past a predicate guard (`@P0`, `@!P1`)."""
    words = ins.split()
    return words[1] if words[0].startswith("@") and len(words) > 1 else words[0]


def findings(body):
    """What is wrong with one function's instructions, or None if it has no wait."""
    ops = [opcode(ins) for ins in body]
    if "ACQBULK" not in ops:
        return None
    first = ops.index("ACQBULK")
    early = [body[i] for i in range(first) if MEMORY_OP.fullmatch(ops[i])]
    noncoherent = [body[i] for i in range(len(body)) if NONCOHERENT_LOAD.fullmatch(ops[i])]
    out = []
    if early:
        out.append("%d global memory instruction(s) before the PDL wait, first: %s" % (len(early), early[0]))
    if noncoherent:
        out.append("%d non-coherent load(s) (ld.global.nc), first: %s" % (len(noncoherent), noncoherent[0]))
    return out


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-3].strip(), file=sys.stderr)
        return 2
    path = argv[1]
    if path.endswith((".so", ".cubin")) or ".so." in path:
        text = subprocess.run(["cuobjdump", "--dump-sass", path], check=True, capture_output=True, text=True).stdout
    else:
        with open(path) as f:
            text = f.read()
    checked = bad = unwaited = 0
    for name, body in kernels(text):
        found = findings(body)
        if found is None:
            unwaited += 1
            continue
        checked += 1
        if found:
            bad += 1
            for f in found:
                print("%s: %s" % (name, f))
    print("pdl order: %d kernels with a wait, %d with a memory access before it or a non-coherent load; "
          "%d without a wait" % (checked, bad, unwaited))
    return 1 if bad or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
