"""Generate the Python protobuf/gRPC code in gen/ from proto/ (the one generator).

`python scripts/generate.py` rewrites gen/python/plait_proto; `--check` exits 1 when the
checked-in code is stale. protoc emits `from plait.v1 import x_pb2`; the code is moved under
the `plait_proto` package so it cannot clash with the `plait` worker SDK, and its imports are
rewritten to match.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "gen" / "python" / "plait_proto"
_IMPORT = re.compile(r"^(from |import )plait\.v1\b", re.MULTILINE)


def _generate(into: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    mypy_grpc = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
    ]
    if mypy_grpc is None:
        raise SystemExit("protoc-gen-mypy_grpc not found: pip install mypy-protobuf")
    args += [f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}", f"--mypy_grpc_out={into}"]
    if protoc.main([*args, *protos]) != 0:
        raise SystemExit("protoc failed")
    generated = into / "plait"
    tree = into / "out"
    tree.mkdir()
    (tree / "__init__.py").write_text("")
    (tree / "v1").mkdir()
    (tree / "v1" / "__init__.py").write_text("")
    for path in sorted((generated / "v1").iterdir()):
        text = _IMPORT.sub(lambda m: f"{m.group(1)}plait_proto.v1", path.read_text())
        (tree / "v1" / path.name).write_text(text)


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when gen/ is stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        _generate(Path(tmp))
        fresh = Path(tmp) / "out"
        if check:
            if not OUT.exists() or _files(fresh) != _files(OUT):
                print("gen/ is stale: run `python scripts/generate.py`", file=sys.stderr)
                return 1
            print("gen/ is fresh")
            return 0
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(fresh, OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
