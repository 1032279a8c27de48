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

A `.ptx` file (nvcc -ptx; CI has nvcc but no disassembler) is checked the same way at the
PTX level: a global or generic memory instruction before a kernel's first
`griddepcontrol.wait`, and any `ld.global.nc` in a kernel with one.  The second is the one
that matters before ptxas: a coherent load is not moved above the wait, a non-coherent one
may be, so a PTX that passes cannot be scheduled into the session-35 defect.

    python3 scripts/pdl_order_check.py LIB.so | FILE.cubin | FILE.sass | FILE.ptx ...
(a .so or .cubin goes through `cuobjdump --dump-sass`; another text file is a cuobjdump or
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

# PTX: memory instructions in the global or generic state space (ld.param / ld.shared /
# ld.local and the like are not), and the non-coherent load.
PTX_ENTRY = re.compile(r"\.entry\s+([\w$]+)\s*\(")
PTX_MEMORY = re.compile(r"(ld|st|atom|red|prefetch|prefetchu|cp\.async|cp\.reduce\.async|tex|tld4|suld|sust|sured|suatom)"
                        r"(?!\.(param|shared|local|const)\b)(\.[\w:]+)*")
PTX_NONCOHERENT = re.compile(r"ld\.global\.nc(\.[\w:]+)*")


def strip_guard(words):
    """An instruction's words past a predicate guard (`@P0`, `@!P1`, `@q`)."""
    return words[1:] if words and words[0].startswith("@") else words


def sass_header(line):
    h = HEADER.search(line)
    return (h.group(1) or h.group(2)) if h else None


def sass_instruction(line):
    """(opcode, text) of a SASS listing line, or None."""
    m = INSTRUCTION.search(line)
    if not m:
        return None
    text = m.group(1).strip()
    words = strip_guard(text.split())
    return (words[0], text) if words else None


def ptx_header(line):
    m = PTX_ENTRY.search(line)
    return m.group(1) if m else None


def ptx_instruction(line):
    """(opcode, opcode) of a PTX line holding one instruction, or None (labels, directives, braces)."""
    code = line.split("//", 1)[0].strip()
    if not code or code.endswith(":") or code[0] in "{}.":
        return None
    words = strip_guard(code.replace("{", " ").split())
    return (words[0].rstrip(";"),) * 2 if words else None


# Each dialect: its function header, its instruction, the wait's opcode, the memory and the
# non-coherent load opcodes.
SASS = (sass_header, sass_instruction, "ACQBULK", MEMORY_OP, NONCOHERENT_LOAD)
PTX = (ptx_header, ptx_instruction, "griddepcontrol.wait", PTX_MEMORY, PTX_NONCOHERENT)


def functions(text, dialect):
    """(name, [(opcode, text), ...]) for each function of a listing, in order."""
    header, instruction = dialect[:2]
    name, body = None, []
    for line in text.splitlines():
        h = header(line)
        if h:
            if name is not None:
                yield name, body
            name, body = h, []
            continue
        ins = instruction(line) if name is not None else None
        if ins:
            body.append(ins)
    if name is not None:
        yield name, body


def findings(body, dialect):
    """What is wrong with one function's (opcode, text) instructions, or None if it has no wait."""
    wait, memory, noncoherent_load = dialect[2:]
    ops = [op for op, _ in body]
    if wait not in ops:
        return None
    first = ops.index(wait)
    early = [text for op, text in body[:first] if memory.fullmatch(op)]
    noncoherent = [text for op, text in body if noncoherent_load.fullmatch(op)]
    out = []
    if early:
        out.append("%d global memory instruction(s) before the PDL wait, first: %s" % (len(early), early[0]))
    if noncoherent:
        out.append("%d non-coherent load(s) (ld.global.nc), first: %s" % (len(noncoherent), noncoherent[0]))
    return out


def listing(path):
    """(name, findings or None) for each kernel in one file."""
    if path.endswith((".so", ".cubin")) or ".so." in path:
        text = subprocess.run(["cuobjdump", "--dump-sass", path], check=True, capture_output=True, text=True).stdout
    else:
        with open(path) as f:
            text = f.read()
    dialect = PTX if path.endswith(".ptx") else SASS
    return [(name, findings(body, dialect)) for name, body in functions(text, dialect)]


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-3].strip(), file=sys.stderr)
        return 2
    checked = bad = unwaited = 0
    for name, found in (k for path in argv[1:] for k in listing(path)):
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
