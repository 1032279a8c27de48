"""Check that no kernel touches global memory before its programmatic-dependent-launch wait.

A kernel launched with PDL may start while the previous grid still writes; it must not read
(or write) global memory before `griddepcontrol.wait` (SASS `ACQBULK`).  The compiler may move
`ld.global.nc` loads, which it treats as reads of memory nothing writes, above a wait that
sits under a branch: session 35 found the W4A16 lean kernels issuing their first weight,
scale and activation loads before `if (p.pdl) griddepcontrol.wait`.  This reads a SASS dump
(`cuobjdump --dump-sass LIB` or `nvdisasm -c CUBIN`, or runs cuobjdump on a library) and
lists every kernel with a global load, store or atomic before its first ACQBULK.  Kernels
without a wait are not PDL kernels and are skipped.  Exit status 1 if any is found.

    python3 scripts/pdl_order_check.py libgatednorm.so | FILE.sass
"""
import re
import subprocess
import sys

# Global-memory instructions (LDC, constant-bank loads, and LDS/STS, shared memory, are not).
MEMORY_OP = re.compile(r"(LDG|STG|LD|ST|ATOM|ATOMG|RED|LDGSTS|UBLKCP|UTMALDG|UTMASTG|UBLKPF|CCTL)(\.[.\w]*)?")
INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(.*?);")
HEADER = re.compile(r"(?:Function : (\S+))|(?:^\s*\.text\.(\S+):)")


def kernels(text):
    """(name, [instruction text, ...]) for each function of a SASS dump, in order."""
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


def early_memory_ops(body):
    """The global-memory instructions before the first ACQBULK, or None without one."""
    for i, ins in enumerate(body):
        if opcode(ins) == "ACQBULK":
            return [b for b in body[:i] if MEMORY_OP.fullmatch(opcode(b))]
    return None


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    path = argv[1]
    if path.endswith(".so") or ".so." in path:
        text = subprocess.run(["cuobjdump", "--dump-sass", path], check=True, capture_output=True, text=True).stdout
    else:
        with open(path) as f:
            text = f.read()
    checked, bad = 0, 0
    for name, body in kernels(text):
        early = early_memory_ops(body)
        if early is None:
            continue
        checked += 1
        if early:
            bad += 1
            print(f"{name}: {len(early)} global memory instruction(s) before the PDL wait, first: {early[0]}")
    print(f"pdl order: {checked} kernels with a wait, {bad} touching memory before it")
    return 1 if bad or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
