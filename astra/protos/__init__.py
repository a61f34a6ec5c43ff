"""gRPC contracts (ARCHITECTURE §5). The *_pb2 modules are generated from the .proto files here."""

from astra.protos.build import build as _build

_build()  # no-op when the generated code is current
