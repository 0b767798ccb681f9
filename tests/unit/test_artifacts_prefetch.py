"""The lock's index pages fetched ahead (during byte-compiling) give what a lookup would fetch."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sqenv.export import artifacts

PAGE = b'<a href="../../files/six-1.16.0-py2.py3-none-any.whl#sha256=abc123">six-1.16.0-py2.py3-none-any.whl</a>'
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
# PEP 691, as PyPI answers when asked: an older six first (skipped by its version), a relative URL
JSON_PAGE = json.dumps({"meta": {"api-version": "1.1"}, "name": "six", "files": [
    {"filename": "six-1.15.0-py2.py3-none-any.whl", "url": "../../files/six-1.15.0-py2.py3-none-any.whl",
     "hashes": {"sha256": "old"}},
    {"filename": "six-1.16.0-py2.py3-none-any.whl", "url": "../../files/six-1.16.0-py2.py3-none-any.whl",
     "hashes": {"sha256": "abc123"}}]}).encode()  # fmt: skip


class _Simple(BaseHTTPRequestHandler):
    json_too = False  # answers PEP 691's JSON when asked (PyPI does), else HTML only

    def do_GET(self) -> None:
        as_json = self.json_too and JSON_TYPE in self.headers.get("Accept", "")
        body = (JSON_PAGE if as_json else PAGE) if self.path == "/simple/six/" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", JSON_TYPE if as_json else "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def site_with_six(root: Path) -> Path:
    info = root / "six-1.16.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nTag: py2-none-any\nTag: py3-none-any\n")
    return root


@pytest.mark.parametrize("json_too", [False, True], ids=["html", "json"])
def test_a_prefetched_page_serves_the_lookup_after_the_index_is_gone(tmp_path: Path, json_too: bool) -> None:
    handler = type("Handler", (_Simple,), {"json_too": json_too})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = {"index_url": f"http://127.0.0.1:{server.server_address[1]}/simple"}
    try:
        artifacts.prefetch(["Six"], index)
        fetch = artifacts._PREFETCHED[(index["index_url"], "six")]
        fetch.join(10)
    finally:
        server.shutdown()
        server.server_close()
    found = artifacts.lookup([("six", "1.16.0")], site_with_six(tmp_path / "site"), index)
    assert found == {"six": {"url": f"{index['index_url'][:-7]}/files/six-1.16.0-py2.py3-none-any.whl",
                             "sha256": "abc123", "index": index["index_url"]}}  # fmt: skip
    assert artifacts._PREFETCHED == {}  # used once


def test_nothing_is_fetched_without_an_index(tmp_path: Path) -> None:
    artifacts.prefetch(["six"], {"no_index": True})
    assert artifacts._PREFETCHED == {}
