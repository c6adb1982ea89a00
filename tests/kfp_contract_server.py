"""Contract test double of the few Kubeflow Pipelines REST endpoints (v2beta1) that
`gallerytag pipeline submit/schedule` use. It is NOT a KFP server: it records the requests
`kfp.Client` sends and answers with the minimal documented response shapes, so tests can
check what we send. Anything it does not know gets a 404, which fails the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


@dataclass
class Recorded:
    """Requests seen, in order: (method, path, query, body bytes)."""

    requests: list[tuple[str, str, dict, bytes]] = field(default_factory=list)

    def find(self, method: str, path: str) -> list[tuple[str, str, dict, bytes]]:
        """The requests with this method and exact path."""
        return [r for r in self.requests if r[0] == method and r[1] == path]


def _answer(method: str, path: str, body: bytes) -> tuple[int, dict]:
    data = json.loads(body) if body.startswith(b"{") else {}
    routes = {
        ("GET", f"{API}/healthz"): {"multi_user": False},
        ("GET", f"{API}/experiments"): {"experiments": []},
        ("POST", f"{API}/experiments"): {
            "experiment_id": "exp-1",
            "display_name": data.get("display_name", ""),
        },
        ("POST", f"{API}/runs"): {
            "run_id": "run-1",
            "display_name": data.get("display_name", ""),
            "experiment_id": data.get("experiment_id", ""),
            "state": "PENDING",
        },
        ("GET", f"{API}/pipelines"): {"pipelines": []},
        ("POST", f"{API}/pipelines/upload"): {
            "pipeline_id": "pl-1",
            "display_name": "gallerytag-training",
        },
        ("GET", f"{API}/pipelines/pl-1/versions"): {
            "pipeline_versions": [{"pipeline_id": "pl-1", "pipeline_version_id": "ver-1"}]
        },
        ("POST", f"{API}/recurringruns"): {
            "recurring_run_id": "rr-1",
            "display_name": data.get("display_name", ""),
            "status": "ENABLED",
        },
    }
    if (method, path) in routes:
        return 200, routes[(method, path)]
    return 404, {"error": f"contract server does not serve {method} {path}"}


@contextmanager
def kfp_contract_server() -> Iterator[tuple[str, Recorded]]:
    """Serve on 127.0.0.1 (free port); yields (host URL, recorded requests)."""
    recorded = Recorded()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorded.requests.append((self.command, url.path, parse_qs(url.query), body))
            status, payload = _answer(self.command, url.path, body)
            encoded = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, *args: object) -> None:
            """Keep test output clean."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()
