"""Fixtures for the client-compatibility suite.

A real broker process is started per test module on a free loopback port with its own data
directory.  Which broker is chosen by STRATA_TEST_TARGET:

  strata (default)  $STRATA_NODE_BIN (default <repo>/target/debug/strata-node), started with
                    --listen/--advertise 127.0.0.1:PORT --data-dir DIR --node-id 1
                    (extra arguments: $STRATA_NODE_ARGS, split like a shell would)
  kafka             the reference Apache Kafka from tests/testbed/kafka.sh (install.sh first)

Every test must pass against kafka: that is what proves the expectations right.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from strata_testlib import TESTBED, free_port, node_bin, pid_alive, port_open
from strata_testlib.proc import ANSI

TARGET = os.environ.get("STRATA_TEST_TARGET", "strata")
START_TIMEOUT = float(os.environ.get("STRATA_TEST_START_TIMEOUT", "90"))
STOP_TIMEOUT = float(os.environ.get("STRATA_TEST_STOP_TIMEOUT", "60"))


def pytest_sessionstart(session):
    if TARGET not in ("strata", "kafka"):
        pytest.exit(f"STRATA_TEST_TARGET must be 'strata' or 'kafka', not {TARGET!r}", returncode=4)
    if TARGET == "strata" and not node_bin().is_file():
        pytest.exit(
            f"strata-node binary not found at {node_bin()}: build it with "
            "`cargo build -p strata-node`, point STRATA_NODE_BIN at it, or run against the "
            "reference broker with STRATA_TEST_TARGET=kafka",
            returncode=4,
        )


def pytest_report_header(config):
    where = node_bin() if TARGET == "strata" else "tests/testbed/kafka.sh"
    return f"broker under test: {TARGET} ({where})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("call", "setup"):
        b = item.funcargs.get("broker") if hasattr(item, "funcargs") else None
        if isinstance(b, Broker):
            rep.sections.append((f"broker log tail ({b.log_path})", b.log_tail(30)))


class Broker:
    """One broker process on a fixed port and data dir, which can be stopped and restarted."""

    def __init__(self, target: str, workdir: Path, port: int, file_limit: int | None = None):
        """`file_limit` caps the process's open files (soft and hard, so it cannot raise
        them), as a tightly configured container does."""
        self.target = target
        self.file_limit = file_limit
        self.workdir = workdir
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.starts = 0
        if target == "strata":
            self.data_dir = workdir / "data"
            self.log_path = workdir / "strata-node.log"
        else:
            self.data_dir = workdir
            self.log_path = workdir / "logs" / "server.log"

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self):
        assert self.pid is None or not pid_alive(self.pid), "broker already running"
        deadline = time.monotonic() + START_TIMEOUT
        if self.target == "strata":
            self.data_dir.mkdir(parents=True, exist_ok=True)
            cmd = [
                str(node_bin()),
                "--listen", self.bootstrap,
                "--advertise", self.bootstrap,
                "--data-dir", str(self.data_dir),
                "--node-id", "1",
            ] + shlex.split(os.environ.get("STRATA_NODE_ARGS", ""))
            with open(self.log_path, "ab") as log:
                log.write(f"\n==== start #{self.starts + 1}: {shlex.join(cmd)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, cwd=self.workdir,
                    env=dict(os.environ, NO_COLOR="1"), preexec_fn=self._limit_files,
                )
            self.pid = self.proc.pid
            while not port_open(self.port):
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"strata-node exited with {self.proc.returncode} during startup:\n"
                        + self.log_tail(40))
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"strata-node did not open port {self.port} in {START_TIMEOUT}s")
                time.sleep(0.05)
        else:
            r = subprocess.run(
                [str(TESTBED / "kafka.sh"), "start", str(self.workdir), str(self.port)],
                capture_output=True, text=True, timeout=START_TIMEOUT + 30,
            )
            if r.returncode != 0:
                raise RuntimeError(f"kafka.sh start failed:\n{r.stdout}\n{r.stderr}")
            self.pid = int((self.workdir / "kafka.pid").read_text().strip())
        self.starts += 1
        self.wait_ready(deadline)

    def _limit_files(self):
        if self.file_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.file_limit, self.file_limit))

    def wait_ready(self, deadline: float):
        """The port is open; wait until a Metadata request lists this broker."""
        from confluent_kafka.admin import AdminClient

        last = None
        while time.monotonic() < deadline:
            if not pid_alive(self.pid):
                raise RuntimeError("broker died while starting:\n" + self.log_tail(40))
            try:
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 5000})
                md = admin.list_topics(timeout=5)
                if 1 in md.brokers:
                    return
                last = f"brokers in metadata: {md.brokers}"
            except Exception as e:  # noqa: BLE001 - keep polling until the deadline
                last = repr(e)
            time.sleep(0.2)
        raise RuntimeError(f"broker on {self.bootstrap} not ready: {last}")

    def _signal(self, sig: int, timeout: float) -> bool:
        """Send sig, wait up to timeout for the process to exit.  True if it exited."""
        if self.pid is None or not pid_alive(self.pid):
            return True
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None:
                if self.proc.poll() is not None:
                    return True
            elif not pid_alive(self.pid):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        """Clean stop: SIGTERM, and the broker must exit within STOP_TIMEOUT seconds."""
        if not self._signal(signal.SIGTERM, STOP_TIMEOUT):
            self._signal(signal.SIGKILL, 10)
            self._reset()
            raise AssertionError(f"broker did not exit within {STOP_TIMEOUT}s of SIGTERM")
        self._reset()

    def kill(self):
        """Crash: SIGKILL, no chance to flush or close anything."""
        if not self._signal(signal.SIGKILL, 30):
            raise RuntimeError(f"pid {self.pid} survived SIGKILL")
        self._reset()

    def restart(self, kill: bool = False):
        self.kill() if kill else self.stop()
        self.start()

    def _reset(self):
        self.proc = None
        self.pid = None
        if self.target == "kafka":
            (self.workdir / "kafka.pid").unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as e:
            return f"(no log: {e})"
        return ANSI.sub("", "\n".join(lines[-n:]))


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"{TARGET}-broker")
    b = Broker(TARGET, workdir, free_port())
    b.start()
    yield b
    if b.running:
        try:
            b.stop()
        except AssertionError:
            pass  # already SIGKILLed; the test that cares about clean stops checks itself


@pytest.fixture
def topic(request):
    """A topic name unique to this test (not created: auto-creation or the test does that)."""
    name = re.sub(r"[^a-zA-Z0-9_-]+", "-", request.node.name).strip("-")[:180]
    return f"{name}-{uuid.uuid4().hex[:6]}"
