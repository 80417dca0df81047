"""Writes deploy/constraints.txt: the exact versions of the environment `make setup` verified, for the image.

The Dockerfile installs under these constraints, so an image built later gets the versions the tests passed
with instead of whatever the ranges in pyproject.toml resolve to that day. torch is left out (the image pins
it by TORCH_VERSION from the CPU or the CUDA index, whose builds carry different local versions), and so is
streamrank itself. Run `make constraints` after changing dependencies.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "deploy" / "constraints.txt"
LEFT_OUT = {"torch", "streamrank"}


def main() -> int:
    """Freezes the running interpreter's environment into deploy/constraints.txt."""
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    pins = sorted((line for line in frozen if "==" in line and line.split("==")[0].lower() not in LEFT_OUT),
                  key=str.lower)
    header = ["# Versions verified by `make setup` + `make test` (scripts/freeze_constraints.py; `make constraints`).",
              "# The Dockerfile installs under them; torch is pinned there by TORCH_VERSION."]
    OUT.write_text("\n".join(header + pins) + "\n")
    print(f"wrote {OUT} ({len(pins)} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
