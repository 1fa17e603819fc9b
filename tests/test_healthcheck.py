"""npsflow.healthcheck, the container HEALTHCHECK: 200 → exit 0, 503 → exit 1 with the reasons, nothing there → 1."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from npsflow import healthcheck


@pytest.fixture
def server():
    answers = {"/readyz": (200, {"status": "ready"}), "/healthz": (200, {"status": "ok"})}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            status, body = answers.get(self.path, (404, {}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], answers
    httpd.shutdown()
    httpd.server_close()


def test_probe_ready_unhealthy_and_down(server, monkeypatch, capsys):
    port, answers = server
    monkeypatch.setenv("NPSFLOW_PUBLIC_BIND", f"0.0.0.0:{port}")
    assert healthcheck.main([]) == 0 and healthcheck.main(["healthz"]) == 0
    answers["/readyz"] = (503, {"status": "unhealthy", "reasons": ["kafka: no metadata within 3 s"]})
    capsys.readouterr()
    assert healthcheck.main(["readyz"]) == 1
    assert capsys.readouterr().out.strip() == "readyz: 503 kafka: no metadata within 3 s"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("NPSFLOW_PUBLIC_BIND", f"0.0.0.0:{closed}")
    assert healthcheck.main([]) == 1
    assert healthcheck.main(["status"]) == 2


def test_probe_url_follows_the_public_bind():
    assert healthcheck.probe_url({}) == "http://127.0.0.1:8080/readyz"
    assert healthcheck.probe_url({"NPSFLOW_PUBLIC_BIND": "[::]:9000"}, "healthz") == "http://[::1]:9000/healthz"
    assert healthcheck.probe_url({"NPSFLOW_PUBLIC_BIND": "10.0.0.5:8080"}) == "http://10.0.0.5:8080/readyz"
    with pytest.raises(ValueError, match="fixed port"):
        healthcheck.probe_url({"NPSFLOW_PUBLIC_BIND": "127.0.0.1:0"})
