"""Fakes the notebook package's tests share: a fake tokenkeeper on loopback, JWTs, clocks."""

import base64
import http.server
import json
import socket
import threading
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

NOW = 1_800_000_000


def jwt(**claims):
    """Return an unsigned JWT with claims (the client never checks signatures)."""
    def seg(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{seg({'alg': 'RS256'})}.{seg(claims)}.c2ln"


TOKEN = jwt(iat=NOW, exp=NOW + 600)


class Fake:
    """A fake tokenkeeper on 127.0.0.1.

    It answers fresh-token (every GET but session-end) with ``status``,
    ``body`` and ``headers``, or, with ``answer``, with what
    ``answer(query)`` returns: (status, body); ``seen`` records each as
    (path, query, Authorization).

    It answers session-end with what ``session_end(query)`` returns:
    (status, body) or (status, body, headers); by default 404, as a
    tokenkeeper without it does. ``waits`` records each as (query,
    Authorization).

    It answers each PUT (a report of token files) with ``report_status``
    (default 204) and records it in ``reports`` as a namespace with
    ``path``, ``body`` (the JSON), ``text``, ``authorization`` and
    ``content_type``.
    """

    def __init__(self, status=200, body=None, headers=None, sock=None, answer=None, session_end=None,
                 report_status=204):
        self.status, self.headers, self.seen = status, headers or {}, []
        self.body = {"user": "alice", "access_token": TOKEN, "expires_in": 600} if body is None else body
        self.answer = answer or (lambda query: (self.status, self.body))
        self.session_end = session_end or (lambda query: (404, {"error": "not_found", "message": "404 page not found"}))
        self.waits, self.reports, self.report_status = [], [], report_status
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                u = urlsplit(self.path)
                query = parse_qs(u.query)
                if u.path.endswith("/session-end"):
                    query = parse_qs(u.query, keep_blank_values=True)
                    fake.waits.append((query, self.headers.get("Authorization")))
                    status, body, *headers = fake.session_end(query)
                    self.reply(status, body, headers[0] if headers else {})
                    return
                fake.seen.append((u.path, query, self.headers.get("Authorization")))
                status, body = fake.answer(query)
                self.reply(status, body, fake.headers)

            def do_PUT(self):
                text = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                fake.reports.append(SimpleNamespace(
                    path=urlsplit(self.path).path, body=json.loads(text), text=text,
                    authorization=self.headers.get("Authorization"), content_type=self.headers.get("Content-Type")))
                self.send_response(fake.report_status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def reply(self, status, body, headers):
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=sock is None)
        self.server.daemon_threads = True
        if sock is not None:
            self.server.socket.close()
            self.server.socket = sock
        self.port = self.server.server_address[1] if sock is None else sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/services/tokenkeeper/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeTime:
    """A clock that moves only when the client sleeps; on_sleep runs at each sleep."""

    def __init__(self, on_sleep=None, now=0.0):
        self.now, self.sleeps, self.on_sleep = now, [], on_sleep

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening_socket(port):
    """Return a socket listening on 127.0.0.1:port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock
