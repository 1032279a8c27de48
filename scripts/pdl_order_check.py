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


# PTX: an entry's name, its instructions (one a line, a predicate guard stripped), memory
# instructions in the global or generic state space (ld.param / ld.shared / ld.local and the
# like are not), and the non-coherent load.
PTX_ENTRY = re.compile(r"\.entry\s+([\w$]+)\s*\(")
PTX_MEMORY = re.compile(r"(ld|st|atom|red|prefetch|prefetchu|cp\.async|cp\.reduce\.async|tex|tld4|suld|sust|sured|suatom)"
                        r"(?!\.(param|shared|local|const)\b)(\.[\w:]+)*$")
PTX_NONCOHERENT = re.compile(r"ld\.global\.nc(\.[\w:]+)*$")


def ptx_kernels(text):
    """(name, [opcode, ...]) for each .entry of a PTX file, in order."""
    name, ops = None, []
    for line in text.splitlines():
        m = PTX_ENTRY.search(line)
        if m:
            if name is not None:
                yield name, ops
            name, ops = m.group(1), []
            continue
        code = line.split("//", 1)[0].strip()
        if name is None or not code or code.endswith(":") or code[0] in "{}.":
            continue
        words = code.replace("{", " ").split()
        if words and words[0].startswith("@"):
            words = words[1:]
        if words:
            ops.append(words[0].rstrip(";"))
    if name is not None:
        yield name, ops


def ptx_findings(ops):
    """As findings(), for one PTX entry's opcodes."""
    if "griddepcontrol.wait" not in ops:
        return None
    first = ops.index("griddepcontrol.wait")
    early = [o for o in ops[:first] if PTX_MEMORY.match(o)]
    noncoherent = [o for o in ops if PTX_NONCOHERENT.match(o)]
    out = []
    if early:
        out.append("%d global memory instruction(s) before the PDL wait, first: %s" % (len(early), early[0]))
    if noncoherent:
        out.append("%d non-coherent load(s) (ld.global.nc)" % len(noncoherent))
    return out


def listing(path):
    """(name, findings or None) for each kernel in one file."""
    if path.endswith(".ptx"):
        with open(path) as f:
            return [(name, ptx_findings(ops)) for name, ops in ptx_kernels(f.read())]
    if path.endswith((".so", ".cubin")) or ".so." in path:
        text = subprocess.run(["cuobjdump", "--dump-sass", path], check=True, capture_output=True, text=True).stdout
    else:
        with open(path) as f:
            text = f.read()
    return [(name, findings(body)) for name, body in kernels(text)]


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
