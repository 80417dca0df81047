"""Generates the Python modules for the schemas in protos/ (run `make proto` after editing a .proto).

The generated files are committed under streamrank/v1/ so that a user needs no protoc; the test suite
regenerates them into a temporary folder and fails when the committed ones are stale.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_PACKAGE = Path("streamrank") / "v1"


def proto_files() -> list[Path]:
    """All schema files, relative to protos/, in a stable order."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc (from grpcio-tools) over every schema into out_dir; returns the files written."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    written = sorted((out_dir / PROTO_PACKAGE).glob("*.py*"))
    # grpc_python_out writes an (empty) *_pb2_grpc.py for schemas without services: keep only real ones.
    for path in list(written):
        if path.name.endswith("_pb2_grpc.py") and "class " not in path.read_text():
            path.unlink()
            written.remove(path)
    return written


# The grpc generator stamps its own version into the stubs (the oldest grpcio they accept); a newer generator
# changes that line and nothing else, so it is not a sign of a schema edited without regenerating.
_GENERATOR_VERSION = re.compile(rb"^GRPC_GENERATED_VERSION = .*$", re.MULTILINE)


def _normalized(raw: bytes) -> bytes:
    return _GENERATOR_VERSION.sub(b"GRPC_GENERATED_VERSION = ...", raw)


def stale_files() -> list[str]:
    """Names of generated modules that differ from what the schemas produce now (empty when fresh), leaving
    aside the grpc generator's version stamp."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: _normalized(p.read_bytes()) for p in generate(Path(tmp))}
    committed_dir = REPO_ROOT / PROTO_PACKAGE
    committed = {
        p.name: _normalized(p.read_bytes()) for p in committed_dir.glob("*.py*") if p.name != "__init__.py"
    }
    names = set(fresh) | set(committed)
    return sorted(n for n in names if fresh.get(n) != committed.get(n))


def main() -> int:
    """Regenerates streamrank/v1/ in place."""
    target = REPO_ROOT / PROTO_PACKAGE
    for old in target.glob("*_pb2*.py*"):
        old.unlink()
    written = generate(REPO_ROOT)
    (target / "__init__.py").write_text('"""Generated protobuf modules (make proto). Do not edit."""\n')
    for path in written:
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
