"""A stand-in of WeChat's open API and cloud storage, on loopback, for the cloud-file tests.

WeChat's servers cannot be reached from here, so this serves what the function and the
mini-program's cloud calls need, built from the documented request and response shapes:

- ``POST /cgi-bin/stable_token`` ``{"grant_type": "client_credential", "appid", "secret",
  "force_refresh"}`` answers ``{"access_token", "expires_in": 7200}``, or
  ``{"errcode": 40125, "errmsg": "invalid appsecret"}``.
- ``POST /tcb/batchdownloadfile?access_token=...`` ``{"env", "file_list": [{"fileid",
  "max_age"}]}`` answers ``{"errcode": 0, "errmsg": "ok", "file_list": [{"fileid",
  "download_url", "status", "errmsg"}]}``; a file that does not exist has status -503003
  and errmsg ``STORAGE_FILE_NONEXIST`` (CloudBase's storage error code). Without a token,
  where one is required, ``{"errcode": 41001, "errmsg": "access_token missing"}``; in
  ``cloudrun`` mode no token is needed (Cloud Run's open-API service signs the call).
- ``GET /download/<path>?sign=...`` serves the stored bytes (a temporary download URL).
- ``PUT /upload/<path>`` stores bytes and answers ``{"fileID": "cloud://ENV.BUCKET/path"}``:
  what ``wx.cloud.uploadFile`` ends with, for the mini-program's wx stand-in (the real
  upload goes through ``tcb/uploadfile`` and COS, which this does not copy).

Every call is recorded in `calls` for assertions.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

FILE_NOT_FOUND = -503003


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class WechatOpenApi:
    env: str = "prod-7g3xk2"
    bucket: str = "7072-prod-7g3xk2-1300000000"
    appid: str = "wx0123456789abcdef"
    secret: str = "appsecret-for-tests"
    require_token: bool = True
    """False: as inside Cloud Run, where the open-API service needs no token."""
    delay_seconds: float = 0.0
    """Added before every download, to make a download outlast the deadline."""
    files: dict[str, bytes] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def file_id(self, path: str) -> str:
        return f"cloud://{self.env}.{self.bucket}/{path}"

    def put(self, path: str, data: bytes) -> str:
        """Store a file as wx.cloud.uploadFile would; its file id."""
        self.files[path] = data
        return self.file_id(path)

    def start(self) -> WechatOpenApi:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _path_of(self, file_id: str) -> str | None:
        prefix = f"cloud://{self.env}.{self.bucket}/"
        return file_id[len(prefix):] if file_id.startswith(prefix) else None

    # -- the endpoints ---------------------------------------------------------------------

    def stable_token(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("grant_type") != "client_credential":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        if body.get("appid") != self.appid:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if body.get("secret") != self.secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return {"access_token": token, "expires_in": 7200}

    def batch_download(self, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        token = query.get("access_token")
        if self.require_token and not token:
            return {"errcode": 41001, "errmsg": "access_token missing"}
        if self.require_token and token not in self.tokens:
            return {"errcode": 40014, "errmsg": "invalid access_token"}
        if body.get("env") != self.env:
            return {"errcode": -501000, "errmsg": "[ResourceNotFound] env not exists"}
        entries = body.get("file_list")
        if not isinstance(entries, list) or not entries:
            return {"errcode": 40097, "errmsg": "invalid args"}
        answered = []
        for entry in entries:
            file_id = str(entry.get("fileid", ""))
            path = self._path_of(file_id)
            if path is None or path not in self.files or not isinstance(entry.get("max_age"),
                                                                           int):
                answered.append({"fileid": file_id, "download_url": "",
                                 "status": FILE_NOT_FOUND, "errmsg": "STORAGE_FILE_NONEXIST"})
                continue
            sign = secrets.token_hex(8)
            answered.append({"fileid": file_id, "status": 0, "errmsg": "ok",
                             "download_url": f"{self.url}/download/{quote(path)}?sign={sign}"})
        return {"errcode": 0, "errmsg": "ok", "file_list": answered}


def _handler(api: WechatOpenApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _record(self, body: Any) -> tuple[str, dict[str, str]]:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            api.calls.append(Call(self.command, parts.path, query, body,
                                  {k.lower(): v for k, v in self.headers.items()}))
            return parts.path, query

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _json(self, doc: dict[str, Any]) -> None:
            self._send(200, json.dumps(doc).encode(), "application/json")

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self._body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            path, query = self._record(body)
            if not isinstance(body, dict):
                self._json({"errcode": 47001, "errmsg": "data format error"})
            elif path == "/cgi-bin/stable_token":
                self._json(api.stable_token(body))
            elif path == "/tcb/batchdownloadfile":
                self._json(api.batch_download(query, body))
            else:
                self._send(404, b"not found", "text/plain")

        def do_GET(self) -> None:  # noqa: N802
            path, _ = self._record(None)
            name = unquote(path.removeprefix("/download/"))
            if not path.startswith("/download/") or name not in api.files:
                self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
                return
            if api.delay_seconds:
                time.sleep(api.delay_seconds)
            self._send(200, api.files[name], "image/jpeg")

        def do_PUT(self) -> None:  # noqa: N802
            data = self._body()
            path, _ = self._record(len(data))
            if not path.startswith("/upload/"):
                self._send(404, b"not found", "text/plain")
                return
            self._json({"fileID": api.put(unquote(path.removeprefix("/upload/")), data)})

    return Handler
