"""Local-memory traffic in SASS (``cuobjdump -sass``), for the spill checks of cuda-check and triton-check.

A local load or store (LDL / STL) is a register spill, a register saved around a call (the slow paths
of IEEE division and square root, 64-bit integer division), or an array in local memory. Inside a loop
it costs on every iteration: that is what the checks refuse. A loop is the span of a backward branch.
"""

from __future__ import annotations

import re

_ARCH = re.compile(r"^\s*arch = (sm_\w+)")
_FUNCTION = re.compile(r"^\s*Function : (\S+)")
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")


def local_traffic(sass: str) -> dict[tuple[str, str], tuple[int, int]]:
    """Per (mangled function name, architecture): (local loads / stores inside loops, outside loops)."""
    functions: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
    current, arch = None, ""
    for line in sass.splitlines():
        if m := _ARCH.match(line):
            arch = m[1]
        elif m := _FUNCTION.match(line):
            current = functions.setdefault((m[1], arch), [])
        elif current is not None and (m := _INSTRUCTION.match(line)):
            current.append((int(m[1], 16), m[2], m[3]))
    result = {}
    for name, code in functions.items():
        loops = []
        for addr, op, operands in code:
            target = re.search(r"0x([0-9a-f]+)\s*$", operands)
            if op.startswith("BRA") and target and int(target[1], 16) <= addr:
                loops.append((int(target[1], 16), addr))
        local = [addr for addr, op, _ in code if op.split(".")[0] in ("STL", "LDL")]
        inside = sum(any(lo <= addr <= hi for lo, hi in loops) for addr in local)
        result[name] = (inside, len(local) - inside)
    return result
