"""Ports and pids."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A free port on host below the kernel's ephemeral range.

    A port inside the range can be picked as the *source* port of a client's connect() while
    the server is down, and a connect from a port to itself succeeds (TCP simultaneous open): a
    restarted server would look up before it is. Outside the range that cannot happen.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(low, 10001))
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host}")


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Something accepts connections on host:port (a self-connection does not count)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return s.getsockname() != s.getpeername()
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie still answers kill(0))."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
