"""A process started by a test: restartable with the same arguments, its output appended to a
log file in which starts and the test's signals are marked (`==== HH:MM:SS test: SIGKILL`),
and killed when the test run dies, however it dies."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .wait import wait_for

ANSI = re.compile(r"\x1b\[[0-9;]*m")

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent():
    """In the child before exec: SIGKILL when the test process dies, even by SIGKILL, so that
    nothing outlives a run (the flag survives a wrapper's exec, such as `ip netns exec`)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Proc:
    """One process. `env` is added to this process's environment, or with inherit_env=False
    is the whole environment."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 *, inherit_env: bool = True):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = dict(os.environ) if inherit_env else {}
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_offset = 0

    def start(self) -> "Proc":
        assert not self.running(), f"{self.name} already running"
        with open(self.log_path, "ab") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _mark(self, what: str):
        with open(self.log_path, "ab") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} test: {what}\n".encode())

    def kill(self):
        """SIGKILL and reap (a stopped process dies of SIGKILL too)."""
        if self.running():
            self._mark("SIGKILL")
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the exit status; if it does not exit in time, SIGKILL and fail."""
        if not self.running():
            return self.proc.returncode if self.proc else 0
        self._mark("SIGTERM")
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM")

    def pause(self):
        self._mark("SIGSTOP")
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self._mark("SIGCONT")
        self.proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        """The whole log, every start."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_since_start(self) -> str:
        """The log of the current (last) start only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stacks(self, timeout: float = 60) -> str | None:
        """Every thread's stack of the running process, by gdb (None without gdb or when
        not running): what a hung process is waiting for. The whole dump is written next to
        the log as <log>.stacks; the returned text keeps only the frames of our code."""
        if not self.running() or shutil.which("gdb") is None:
            return None
        try:
            out = subprocess.run(["gdb", "-p", str(self.pid), "-batch", "-nx",
                                  "-ex", "thread apply all bt"],
                                 capture_output=True, text=True, timeout=timeout).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"gdb failed: {e}"
        self.log_path.with_suffix(".stacks").write_text(out)
        keep = [line for line in out.splitlines()
                if line.startswith("Thread ") or "strata" in line or "parking_lot" in line]
        return "\n".join(keep)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(ANSI.sub("", line) for line in self.log_text().splitlines()[-n:])

    def exited_message(self) -> str:
        return f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        """Wait for needle in the log of this start; fail at once if the process exits
        without having written it."""
        def seen():
            if needle in self.log_since_start():
                return True
            if not self.running():
                raise AssertionError(self.exited_message())
            return False

        wait_for(seen, timeout, f"{needle!r} in the log of {self.name} ({self.log_path})")
