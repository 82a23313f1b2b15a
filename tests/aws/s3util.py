"""A real S3 endpoint on loopback (moto's server mode) and a proxy in front of it.

moto serves S3 over HTTP exactly as boto3 expects, but cannot count requests or break a
download halfway. `S3Proxy` is a plain HTTP proxy on 127.0.0.1 that forwards every
request unchanged (so signatures stay valid), counts them, and for chosen keys sends
the full Content-Length header but only part of the body before closing the
connection: a real truncated download, as a dropped connection produces.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

BUCKET = "models"
REGION = "us-east-1"
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


def aws_env(endpoint: str) -> dict[str, str]:
    """Environment for boto3 against `endpoint` with test credentials, loopback only."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 for credentials
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def upload_dir(client, local: Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under `local` to s3://bucket/prefix/..., like `aws s3 sync`."""
    keys = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        key = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    return keys


@dataclass
class S3Proxy:
    upstream: str
    """host:port of the real S3 endpoint."""
    counts: Counter = field(default_factory=Counter)
    """(method, key) -> requests seen; key is the path without the bucket."""
    truncate: dict[str, float] = field(default_factory=dict)
    """key suffix -> fraction of the body to send before cutting the connection."""
    delay: float = 0.0
    """Seconds each object GET waits before answering (to make downloads overlap)."""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def gets(self, suffix: str = "") -> int:
        return sum(n for (method, key), n in self.counts.items()
                   if method == "GET" and key.endswith(suffix) and "list-type" not in key)

    def lists(self) -> int:
        return sum(n for (method, key), n in self.counts.items()
                   if method == "GET" and "list-type" in key)

    def start(self) -> S3Proxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                parts = urlsplit(self.path)
                key = unquote(parts.path) + ("?" + parts.query if parts.query else "")
                with proxy._lock:
                    proxy.counts[(self.command, key)] += 1
                if proxy.delay and self.command == "GET" and "list-type" not in key:
                    time.sleep(proxy.delay)
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in _HOP_HEADERS}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                    reply_headers = [(k, v) for k, v in reply.getheaders()
                                     if k.lower() not in _HOP_HEADERS | {"content-length"}]
                finally:
                    upstream.close()
                cut = next((f for s, f in proxy.truncate.items()
                            if self.command == "GET" and parts.path.endswith(s)
                            and reply.status == 200), None)
                self.send_response(reply.status)
                for k, v in reply_headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if cut is None:
                    self.wfile.write(data)
                    return
                self.wfile.write(data[:int(len(data) * cut)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="s3-proxy").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
