"""gatednorm.h -> a cffi cdef, with no dependency but ``re``: used by the binding at run time
(``_ffi``) and by the build (``_ffi_build``, run as a script by CMake), so both read the
header by one rule.  Comments are stripped, every preprocessor line is dropped except
``#define NAME <integer literal>``, everything inside ``#ifdef __cplusplus ... #endif`` is
dropped, and the ``GATEDNORM_API`` export macro is removed."""

from __future__ import annotations

import re

_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_INT_DEFINE_RE = re.compile(
    r"^\s*#\s*define\s+([A-Za-z_]\w*)\s+\(?\s*(-?\s*(?:0[xX][0-9a-fA-F]+|\d+))[uUlL]*\s*\)?\s*$"
)
_PP_RE = re.compile(r"^\s*#\s*(\w+)(.*)$")


def cdef_from_header(text: str) -> str:
    """Turn the text of gatednorm.h into a cffi cdef (see the module docstring)."""
    # Comments may hold '#'-lines or span lines: drop them first (keeping line breaks).
    text = _COMMENT_RE.sub(lambda m: "\n" * m.group(0).count("\n") if m.group(0).startswith("/*") else "", text)
    # Join backslash-continued lines so multi-line macros are one preprocessor line.
    text = re.sub(r"\\\n", " ", text)
    out = []
    cplusplus_depth = 0  # > 0 while inside #ifdef __cplusplus ... #endif (nesting counted)
    for line in text.split("\n"):
        m = _PP_RE.match(line)
        if m:
            directive, rest = m.group(1), m.group(2).strip()
            if cplusplus_depth:
                if directive in ("if", "ifdef", "ifndef"):
                    cplusplus_depth += 1
                elif directive == "endif":
                    cplusplus_depth -= 1
                continue
            if directive == "ifdef" and rest == "__cplusplus" or (
                directive == "if" and re.fullmatch(r"defined\s*\(?\s*__cplusplus\s*\)?", rest)
            ):
                cplusplus_depth = 1
                continue
            d = _INT_DEFINE_RE.match(line)
            if directive == "define" and d:
                out.append("#define %s %s" % (d.group(1), d.group(2).replace(" ", "")))
            continue
        if cplusplus_depth:
            continue
        out.append(re.sub(r"\bGATEDNORM_API\b", "", line))
    return "\n".join(out)
