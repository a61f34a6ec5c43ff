"""Generate the gRPC Python code from astra/protos/*.proto with grpcio-tools.

Run on import of astra.protos (`make protos` imports it) when the output is missing or older
than its .proto. The output sits beside the .proto files and is git-ignored: it is built, never committed.
"""

from __future__ import annotations

from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
ROOT = PROTO_DIR.parents[1]


def _outputs(proto: Path) -> list[Path]:
    stem = proto.with_suffix("")
    return [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2_grpc.py")]


def stale() -> list[Path]:
    return [
        p for p in sorted(PROTO_DIR.glob("*.proto"))
        if any(not o.exists() or o.stat().st_mtime < p.stat().st_mtime for o in _outputs(p))
    ]


def build(force: bool = False) -> list[Path]:
    from grpc_tools import protoc

    todo = sorted(PROTO_DIR.glob("*.proto")) if force else stale()
    for proto in todo:
        rel = proto.relative_to(ROOT)
        # -I at the repo root makes the generated imports `from astra.protos import …_pb2`.
        code = protoc.main(["grpc_tools.protoc", f"-I{ROOT}", f"--python_out={ROOT}", f"--pyi_out={ROOT}",
                            f"--grpc_python_out={ROOT}", str(rel)])
        if code != 0:
            raise RuntimeError(f"protoc failed on {rel} (exit {code})")
    return todo


