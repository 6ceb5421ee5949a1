"""Fakes the notebook package's tests share: a fake tokenkeeper on loopback, JWTs, clocks."""

import base64
import http.server
import json
import socket
import threading
from urllib.parse import parse_qs, urlsplit

NOW = 1_800_000_000


def jwt(**claims):
    """Return an unsigned JWT with claims (the client never checks signatures)."""
    def seg(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{seg({'alg': 'RS256'})}.{seg(claims)}.c2ln"


TOKEN = jwt(iat=NOW, exp=NOW + 600)


class Fake:
    """A fake tokenkeeper on 127.0.0.1: answers every GET and records (path, query, Authorization).

    It answers with ``status``, ``body`` and ``headers``, or, with
    ``answer``, with what ``answer(query)`` returns: (status, body).
    """

    def __init__(self, status=200, body=None, headers=None, sock=None, answer=None):
        self.status, self.headers, self.seen = status, headers or {}, []
        self.body = {"user": "alice", "access_token": TOKEN, "expires_in": 600} if body is None else body
        self.answer = answer or (lambda query: (self.status, self.body))
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                u = urlsplit(self.path)
                query = parse_qs(u.query)
                fake.seen.append((u.path, query, self.headers.get("Authorization")))
                status, body = fake.answer(query)
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in fake.headers.items():
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
