"""The controller at scale on Kubernetes: many partitions in the state objects, the bytes one
ISR change writes, and how soon a standby replica serves after the leader is killed.

The load comes from operator/src/bin/metadata-scale.rs, a gRPC client of the controller with
fake nodes (no strata-node process). Size: $STRATA_SCALE_PARTITIONS partitions in all
(default 10000, 100 partitions a topic, replication factor 3); by hand, 100000 (and
$STRATA_SCALE_ISR_CHANGES, default 1, for more ISR-change timings):

    STRATA_SCALE_PARTITIONS=100000 STRATA_OPERATOR_BIN=... \\
        bash tests/operator/run.sh -s -k scale

The figures are printed on one line starting with "SCALE:" (run pytest with -s, or -rP, to
see it).

The state's layout this test expects: every object the controller's store writes is a Secret
labelled strata.dev/controller-state=strata-controller-state, with strata.dev/state-part
`snapshot` or `log`; the head object is the Secret strata-controller-state itself.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from strata_fixtures import StrataOnKube
from strata_testlib import REPO, Proc, binary, run, wait_for

STATE = "strata-controller-state"
STATE_LABEL = f"strata.dev/controller-state={STATE}"
PART_LABEL = "strata.dev/state-part"
# A quarter of Kubernetes' 1 MiB object limit.
MAX_OBJECT_BYTES = 262144

PARTITIONS = int(os.environ.get("STRATA_SCALE_PARTITIONS") or 10000)
PARTITIONS_PER_TOPIC = min(100, PARTITIONS)
TOPICS = max(1, PARTITIONS // PARTITIONS_PER_TOPIC)
# ISR changes made between the two looks at the state objects (shrink, expand back, ...).
# Bytes per change are exact for one change; with more, an object rewritten twice counts once.
ISR_CHANGES = int(os.environ.get("STRATA_SCALE_ISR_CHANGES") or 1)
# A takeover must be served within this (the target is 5 s with 100,000 partitions).
TAKEOVER_LIMIT_S = float(os.environ.get("STRATA_SCALE_TAKEOVER_LIMIT_S") or 30)
TIMEOUT_S = int(os.environ.get("STRATA_SCALE_TIMEOUT_S") or (300 if PARTITIONS <= 10000 else 1800))


def metadata_scale_bin() -> Path:
    """$STRATA_METADATA_SCALE_BIN (relative to the repo), else `metadata-scale` beside the
    strata-operator binary (both are binaries of the strata-operator package: run.sh's
    `cargo build -p strata-operator` builds it), built there if missing."""
    env = os.environ.get("STRATA_METADATA_SCALE_BIN")
    if env:
        p = Path(env)
        return p if p.is_absolute() else REPO / p
    operator = binary("strata-operator")
    p = operator.parent / "metadata-scale"
    if not p.exists() and operator.parent.name == "debug":
        # STRATA_OPERATOR_BIN set, so run.sh built nothing: build the tool into the same target.
        r = subprocess.run(["cargo", "build", "-q", "-p", "strata-operator", "--bin", "metadata-scale"],
                           cwd=REPO, capture_output=True, text=True, timeout=1200,
                           env=dict(os.environ, CARGO_TARGET_DIR=str(operator.parent.parent)))
        assert r.returncode == 0, f"building metadata-scale failed:\n{r.stderr[-3000:]}"
    assert p.exists(), f"{p} missing: cargo build -p strata-operator --bin metadata-scale"
    return p


def data_bytes(obj: dict) -> int:
    """The size of an object's data: its values base64-decoded."""
    return sum(len(base64.b64decode(v)) for v in (obj.get("data") or {}).values())


def state_objects(kube, ns) -> dict[str, dict]:
    """The controller's state objects by name: the labelled Secrets and the head Secret."""
    items = kube.kubectl("get", "secrets", "-n", ns, "-l", STATE_LABEL, "-o", "json",
                         timeout=120).json()["items"]
    objs = {o["metadata"]["name"]: o for o in items}
    if STATE not in objs:
        r = kube.kubectl("get", "secret", STATE, "-n", ns, "-o", "json", check=False)
        if r.ok:
            objs[STATE] = r.json()
    return objs


def versions(objs: dict[str, dict]) -> dict[str, tuple[str, int]]:
    """{name: (resourceVersion, data bytes)}."""
    return {n: (o["metadata"]["resourceVersion"], data_bytes(o)) for n, o in objs.items()}


def settled_versions(kube, ns, quiet_s: float = 1.5, timeout: float = 60) -> dict[str, tuple[str, int]]:
    """The state objects once nothing has changed them for quiet_s (a store may compact in
    the background after a commit)."""
    last = versions(state_objects(kube, ns))
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = versions(state_objects(kube, ns))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"the state objects kept changing for {timeout}s")


def result_line(p: Proc) -> dict | None:
    """The JSON object metadata-scale printed, once it has."""
    for line in reversed(p.log_since_start().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


@pytest.mark.timeout(TIMEOUT_S)
def test_metadata_at_scale_objects_isr_writes_and_takeover(kube, ns, tmp_path):
    tool = metadata_scale_bin()
    s = StrataOnKube(tmp_path, kube.env["KUBECONFIG"], ns, nodes=0)
    load = None
    try:
        s.start()
        leader = wait_for(s.leader, 60, "an operator to lead")
        standby = next(o for o in s.operators if o is not leader)
        urls = [f"http://127.0.0.1:{s.ctl_ports[s.operators.index(o)]}" for o in (leader, standby)]

        # Topics, then a pause before the ISR change, then a hold with the nodes kept alive
        # (heartbeats move to the standby's URL once the leader is gone).
        go, release = tmp_path / "isr-go", tmp_path / "release"
        load = Proc("metadata-scale", [
            tool, "--controller", ",".join(urls),
            "--nodes", "3", "--replication-factor", "3",
            "--topics", str(TOPICS), "--partitions-per-topic", str(PARTITIONS_PER_TOPIC),
            "--batch", "10", "--isr-changes", str(ISR_CHANGES), "--name-prefix", "scale",
            "--pause-before-isr", go, "--hold-after", release,
        ], tmp_path / "metadata-scale.log", {"RUST_BACKTRACE": "0"})
        load.start()
        load.wait_log(f"waiting for {go}", timeout=TIMEOUT_S * 0.6)

        # ---- the state after the creation ----
        before = settled_versions(kube, ns)
        assert STATE in before, f"no head Secret {STATE}; objects: {sorted(before)}"
        objs = state_objects(kube, ns)
        parts: dict[str, int] = {}
        for name, o in objs.items():
            if name != STATE:
                part = (o["metadata"].get("labels") or {}).get(PART_LABEL)
                assert part in ("snapshot", "log"), f"{name}: {PART_LABEL}={part!r}"
                parts[part] = parts.get(part, 0) + 1
        sizes = {n: b for n, (_, b) in before.items()}
        largest_name = max(sizes, key=sizes.get)
        largest, total = sizes[largest_name], sum(sizes.values())
        assert largest <= MAX_OBJECT_BYTES, \
            f"{largest_name} holds {largest} bytes, over {MAX_OBJECT_BYTES}; sizes: {sizes}"

        # ---- one ISR change: what it writes ----
        go.touch()
        wait_for(lambda: result_line(load) or (not load.running() and load.exited_message()), 120,
                 "metadata-scale's result")
        result = result_line(load)
        assert result is not None, load.exited_message()
        assert result["partitions"] == TOPICS * PARTITIONS_PER_TOPIC
        assert result["isr_changes"] == ISR_CHANGES
        after = versions(state_objects(kube, ns))
        written = {n: b for n, (rv, b) in after.items() if before.get(n, (None,))[0] != rv}
        per_change = sum(written.values()) / ISR_CHANGES
        assert written, "the ISR change wrote no state object"
        assert per_change < total / 10, \
            f"an ISR change wrote {per_change:.0f} bytes of a {total}-byte state: {written}"

        # ---- takeover: the leader dies, the standby must serve ----
        leader.kill()
        killed = time.monotonic()
        probe = run([str(tool), "--controller", urls[1], "--probe-only",
                     "--wait-serving-timeout-s", str(max(60, TAKEOVER_LIMIT_S * 2))],
                    env=dict(os.environ, RUST_BACKTRACE="0"), timeout=max(90, TAKEOVER_LIMIT_S * 3))
        takeover_s = time.monotonic() - killed
        serving_after_s = json.loads(probe.out.strip().splitlines()[-1])["serving_after_s"]
        assert standby.running(), standby.exited_message()

        print(f"SCALE: partitions={result['partitions']} topics={TOPICS} rf=3"
              f" create_seconds={result['create_seconds']}"
              f" state_objects={len(before)} (snapshot={parts.get('snapshot', 0)}"
              f" log={parts.get('log', 0)} head=1)"
              f" largest_object_bytes={largest} ({largest_name}) total_state_bytes={total}"
              f" isr_changes={result['isr_changes']}"
              f" isr_change_ms_p50={result['isr_change_ms_p50']}"
              f" isr_change_ms_max={result['isr_change_ms_max']}"
              f" bytes_written_per_isr_change={per_change:.0f} (objects: {len(written)})"
              f" takeover_s={takeover_s:.3f} (probe serving_after_s={serving_after_s},"
              f" lease {StrataOnKube.LEASE_MS} ms)")
        assert takeover_s < TAKEOVER_LIMIT_S, f"the standby served only after {takeover_s:.1f}s"

        release.touch()
        wait_for(lambda: not load.running(), 30, "metadata-scale to exit")
        assert load.returncode == 0, load.exited_message()
    finally:
        if load is not None:
            print(f"--- metadata-scale ---\n{load.log_tail(40)}")
            load.kill()
        print(s.logs())
        s.close()
