"""A loopback HTTP proxy in front of moto that answers chosen requests with a real S3 error
(403 AccessDenied, which botocore does not retry): a fault part way through an upload."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import urllib3

DENIED = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>injected</Message></Error>'


@dataclass
class Faults:
    fail_put_number: int = 0  # the n-th object PUT (1-based) is refused; 0: none
    fail_deletes: bool = False
    puts: int = 0


@contextmanager
def faulty_s3(upstream: str, faults: Faults) -> Iterator[str]:
    """The proxy's endpoint URL while the context is open."""
    pool = urllib3.PoolManager()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _refused(self) -> bool:
            if self.command == "DELETE":
                return faults.fail_deletes
            if self.command != "PUT" or "uploadId=" in self.path:  # object PUTs only, not multipart parts
                return False
            faults.puts += 1
            return faults.puts == faults.fail_put_number

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self._refused():
                self.send_response(403)
                self.send_header("Content-Length", str(len(DENIED)))
                self.end_headers()
                self.wfile.write(DENIED)
                return
            resp = pool.request(self.command, upstream + self.path, body=body, headers=dict(self.headers.items()),
                                preload_content=True, redirect=False, retries=False)
            self.send_response(resp.status)
            for name, value in resp.headers.items():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(resp.data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
