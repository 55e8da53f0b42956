"""A small fault-injecting TCP proxy between strata-node and the S3 server.

Modes (switch at any time with `proxy.mode = ...`):
  pass       forward bytes both ways
  refuse     accept, then close at once (connection reset as the client sees it)
  blackhole  accept and read, never answer (timeouts)
  error503   read one HTTP request (head + Content-Length body), answer 503 SlowDown, close

Only loopback addresses are used. Threads are daemons; `close()` stops accepting.
"""

from __future__ import annotations

import socket
import threading

SLOWDOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    b"Content-Length: 129\r\n\r\n"
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy:
    def __init__(self, upstream_port: int, listen_port: int = 0):
        self.upstream = ("127.0.0.1", upstream_port)
        self.mode = "pass"
        self.connections = 0
        self.faulted = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", listen_port))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def set_mode(self, mode: str):
        assert mode in ("pass", "refuse", "blackhole", "error503")
        self.mode = mode
        if True:
            # Pooled keep-alive connections feel a fault at once, and blackholed ones are
            # released when the mode changes.
            with self._lock:
                for s in list(self._open):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self):
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass

    def _track(self, s: socket.socket, add: bool):
        with self._lock:
            (self._open.add if add else self._open.discard)(s)

    def _accept(self):
        while not self._closed:
            try:
                c, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket):
        mode = self.mode
        if mode != "pass":
            self.faulted += 1
        self._track(c, True)
        try:
            if mode == "refuse":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
                return
            if mode == "blackhole":
                c.settimeout(120)
                while not self._closed and self.mode == "blackhole":
                    try:
                        if not c.recv(65536):
                            break
                    except socket.timeout:
                        break
                    except OSError:
                        break
                c.close()
                return
            if mode == "error503":
                self._answer_503(c)
                return
            self._pipe(c)
        except OSError:
            pass
        finally:
            self._track(c, False)
            try:
                c.close()
            except OSError:
                pass

    def _answer_503(self, c: socket.socket):
        c.settimeout(10)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = c.recv(65536)
            if not chunk:
                return
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        # Do not read the body: answering early (as S3 may) is part of the fault.
        del rest, length
        c.sendall(SLOWDOWN)

    def _pipe(self, c: socket.socket):
        u = socket.create_connection(self.upstream, timeout=10)
        u.settimeout(None)
        c.settimeout(None)
        self._track(c, True)
        self._track(u, True)

        def copy(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=copy, args=(u, c), daemon=True)
        t.start()
        copy(c, u)
        t.join(timeout=30)
        self._track(c, False)
        self._track(u, False)
        u.close()
