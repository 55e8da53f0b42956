"""The chart without a cluster: lint, render with each values file, check what renders, refuse
bad values with a message naming them, and keep the chart's CRDs identical to crds/."""

from __future__ import annotations

import filecmp
import fnmatch
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from conftest import CHART, NAMESPACE, ROOT, VALUES, helm, render, template

VALUE_FILES = {
    "default": [],
    "minimal": ["-f", str(VALUES / "minimal.yaml")],
    "tiering-s3": ["-f", str(VALUES / "tiering-s3.yaml")],
    "metrics": ["-f", str(VALUES / "metrics.yaml")],
    "secure": ["-f", str(VALUES / "secure.yaml")],
}


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str) -> dict:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("name", VALUE_FILES)
def test_lint(name):
    r = helm("lint", str(CHART), "--strict", "--namespace", NAMESPACE, *VALUE_FILES[name])
    assert "0 chart(s) failed" in r.out, r.text


@pytest.mark.parametrize("name", VALUE_FILES)
def test_template_renders_hardened_operator(name):
    objs = render(*VALUE_FILES[name])
    kinds = sorted(o["kind"] for o in objs)
    for kind in ("Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"):
        assert kind in kinds, kinds
    # Every object lands in the release namespace; nothing is cluster-scoped.
    for o in objs:
        assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]
    assert not {"ClusterRole", "ClusterRoleBinding", "Secret", "Namespace"} & set(kinds), kinds

    dep = one(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "volumeMounts" not in c
    args = pod["containers"][0]["args"]
    assert args[0] == "kubernetes"
    flags = dict(a.split("=", 1) for a in args[1:])
    assert flags["--namespace"] == NAMESPACE
    assert flags["--identity"] == "$(POD_NAME)"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for flag in ("--listen", "--metrics-listen", "--lease-name", "--state-secret", "--state-configmap",
                 "--cluster-name", "--session-timeout-ms", "--heartbeat-interval-ms"):
        assert flags.get(flag), f"{flag} missing from {args}"
    assert flags["--listen"].endswith(":9093")
    # What the Cluster reconciler puts in node pods: the node image and the controller Service.
    assert flags["--node-image"] == "strata-node:0.1.0"
    assert flags["--controller-url"] == f"http://strata-controller.{NAMESPACE}.svc:9093"

    # The nodes' account: no token in their pods, and nothing binds it to a role.
    sas = {o["metadata"]["name"]: o for o in by_kind(objs, "ServiceAccount")}
    node_sa = sas["strata-node"]
    assert node_sa["automountServiceAccountToken"] is False
    rb = one(objs, "RoleBinding")
    assert [s["name"] for s in rb["subjects"]] == ["strata-operator"]

    svc = one(objs, "Service")
    assert {p["port"] for p in svc["spec"]["ports"]} >= {9093}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_default_values_make_two_replicas_with_a_disruption_budget():
    objs = render()
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    for kind in ("NetworkPolicy", "ServiceMonitor", "Cluster", "Topic"):
        assert not by_kind(objs, kind), f"{kind} is off by default"


def test_role_grants_no_pod_creation_or_wildcards():
    rules = one(render(), "Role")["rules"]
    granted = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
    for forbidden in ("pods/exec", "pods/eviction", "nodes", "customresourcedefinitions"):
        assert not any(r == forbidden for _, r in granted), forbidden
    # Secrets (CAs, node certificates, users' settings) only in the release's namespace: the
    # Role is namespaced and there is no ClusterRole.
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert len(secrets) == 1 and secrets[0]["resources"] == ["secrets"], secrets
    # Pods are only listed, watched and deleted (the roller replaces node pods one at a time).
    pods = [r for r in rules if "pods" in r["resources"]]
    assert [r["verbs"] for r in pods] == [["list", "watch", "delete"]]
    # Nothing else is deleted but Topics and users' Secrets (a Cluster's objects go with it by
    # garbage collection).
    deletable = {r for rule in rules if "delete" in rule["verbs"] and "resourceNames" not in rule
                 for r in rule["resources"]}
    assert deletable == {"topics", "pods", "secrets"}, deletable
    # ... and the legacy state ConfigMap, by name only: deleted once its state is migrated
    # into the state Secret.
    by_name = [r for r in rules if "delete" in r["verbs"] and "resourceNames" in r]
    assert by_name == [{"apiGroups": [""], "resources": ["configmaps"],
                        "resourceNames": ["strata-controller-state"], "verbs": ["delete"]}], by_name
    # Volumes are only read and grown.
    pvc = [r for r in rules if "persistentvolumeclaims" in r["resources"]]
    assert [r["verbs"] for r in pvc] == [["get", "patch"]]
    # Leases: only the chart's own one may be read or renewed.
    lease_rules = [r for r in rules if "leases" in r["resources"]]
    assert any(r["verbs"] == ["create"] and "resourceNames" not in r for r in lease_rules)
    assert any(r.get("resourceNames") == ["strata-operator"] for r in lease_rules)


def test_secure_values_turn_everything_on():
    objs = render(*VALUE_FILES["secure"])
    c = one(objs, "Cluster")["spec"]
    assert c["listener"] == {"port": 9092, "authentication": "scram-sha-512", "tls": True}
    assert c["authorization"] == {"type": "simple", "superUsers": ["User:admin"]}
    u = one(objs, "User")
    assert u["metadata"]["name"] == "orders-app"
    assert u["spec"]["authentication"] == {"type": "scram-sha-512"}
    assert len(u["spec"]["authorization"]["acls"]) == 3
    assert u["spec"]["quotas"] == {"producerByteRate": 10485760}
    # Off by default.
    assert not by_kind(render(), "User")


def test_minimal_has_one_replica_and_no_budget():
    objs = render(*VALUE_FILES["minimal"])
    assert one(objs, "Deployment")["spec"]["replicas"] == 1
    assert not by_kind(objs, "PodDisruptionBudget")


def test_tiering_credentials_only_by_secret_reference():
    out = template(*VALUE_FILES["tiering-s3"]).out
    objs = [d for d in yaml.safe_load_all(out) if d]
    cluster = one(objs, "Cluster")
    store = cluster["spec"]["objectStore"]
    assert store == {
        "bucket": "strata-data", "prefix": "prod/strata",
        "endpoint": "http://minio.storage.svc:9000", "region": "us-east-1",
        "credentialsSecretRef": {"name": "strata-s3", "accessKeyIdKey": "AWS_ACCESS_KEY_ID",
                                 "secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY"},
    }
    assert cluster["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    topic = one(objs, "Topic")
    assert topic["spec"]["clusterRef"] == {"name": "strata"}
    assert topic["spec"]["config"]["local.retention.ms"] == "86400000"
    assert topic["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not by_kind(objs, "Secret")
    np = one(objs, "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]


def test_metrics_values_render_a_service_monitor():
    objs = render(*VALUE_FILES["metrics"])
    sm = one(objs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    svc = one(objs, "Service")
    assert {"name": "metrics", "port": 9464} .items() <= next(
        p for p in svc["spec"]["ports"] if p["name"] == "metrics").items()
    # The ServiceMonitor selects the Service.
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    dep = one(objs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-listen=0.0.0.0:9464" in args
    np = one(objs, "NetworkPolicy")
    metrics_rule = next(r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == "metrics")
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]


def test_release_name_prefixes_every_object():
    objs = render(release="blue")
    for o in objs:
        assert o["metadata"]["name"].startswith("blue-strata-"), o["metadata"]["name"]
    dep = one(objs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--lease-name=blue-strata-operator" in args
    assert "--state-secret=blue-strata-controller-state" in args
    assert "--state-configmap=blue-strata-controller-state" in args


# Values the chart must refuse, each with what the message has to say. JSON Schema catches the
# single values (helm names the path); the template's `fail` catches rules across values.
BAD_VALUES = [
    ("replicas zero", ["--set", "operator.replicas=0"], ["/operator/replicas", "minimum"]),
    ("replicas a string", ["--set-string", "operator.replicas=two"],
     ["/operator/replicas", "integer"]),
    ("unknown log format", ["--set", "operator.logFormat=xml"], ["/operator/logFormat"]),
    ("lease too short", ["--set", "operator.leaseDurationMs=1000"],
     ["/operator/leaseDurationMs", "minimum"]),
    ("port out of range", ["--set", "operator.controllerPort=70000"],
     ["/operator/controllerPort", "maximum"]),
    ("bind address not an IP", ["--set", "operator.bindAddress=localhost"],
     ["/operator/bindAddress"]),
    ("root user", ["--set", "operator.runAsUser=0"], ["/operator/runAsUser", "minimum"]),
    ("bad pull policy", ["--set", "image.pullPolicy=Sometimes"], ["/image/pullPolicy"]),
    ("bad digest", ["--set", "image.digest=abc"], ["/image/digest"]),
    ("misspelt key", ["--set", "operator.replica=2"],
     ["/operator", "additional properties 'replica' not allowed"]),
    ("unknown top-level key", ["--set", "replicas=2"],
     ["additional properties 'replicas' not allowed"]),
    ("access key in values", ["--set", "examples.cluster.objectStore.accessKeyId=AKIAEXAMPLE"],
     ["/examples/cluster/objectStore", "additional properties 'accessKeyId' not allowed"]),
    ("secret key in values",
     ["--set", "examples.cluster.objectStore.credentialsSecretRef.secretAccessKey=s3cr3t"],
     ["/examples/cluster/objectStore/credentialsSecretRef",
      "additional properties 'secretAccessKey' not allowed"]),
    ("endpoint without scheme", ["--set", "examples.cluster.objectStore.endpoint=minio:9000"],
     ["/examples/cluster/objectStore/endpoint"]),
    ("storage size not a quantity", ["--set", "examples.cluster.storage.size=lots"],
     ["/examples/cluster/storage/size"]),
    ("topic config not a string", ["--set", "examples.topic.config.retention\\.ms=604800000"],
     ["/examples/topic/config/retention.ms", "string"]),
    ("unknown deletion policy", ["--set", "examples.topic.deletionPolicy=Keep"],
     ["/examples/topic/deletionPolicy"]),
    ("zero partitions", ["--set", "examples.topic.partitions=0"],
     ["/examples/topic/partitions", "minimum"]),
    ("topic name with capitals", ["--set", "examples.topic.name=Orders"],
     ["/examples/topic/name"]),
    ("scrape interval without unit", ["--set", "metrics.serviceMonitor.interval=30"],
     ["/metrics/serviceMonitor/interval"]),
    ("session timeout under two heartbeats",
     ["--set", "operator.controller.sessionTimeoutMs=600",
      "--set", "operator.controller.heartbeatIntervalMs=500"],
     ["sessionTimeoutMs (600) must be at least twice", "heartbeatIntervalMs (500)"]),
    ("same port twice", ["--set", "operator.metricsPort=9093"],
     ["controllerPort and operator.metricsPort must differ"]),
    ("existing account without a name", ["--set", "serviceAccount.create=false"],
     ["serviceAccount.name must name an existing ServiceAccount"]),
    ("object store options without a bucket",
     ["--set", "examples.cluster.enabled=true",
      "--set", "examples.cluster.objectStore.credentialsSecretRef.name=strata-s3"],
     ["objectStore", "bucket is empty"]),
    ("Kubernetes too old", ["--kube-version", "1.28.0"], ["kubeVersion", ">=1.30.0-0"]),
]


@pytest.mark.parametrize("case,args,says", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_refused_with_a_clear_message(case, args, says):
    r = template(*args, check=False)
    assert r.rc != 0, f"{case}: rendered instead of failing"
    for s in says:
        assert s in r.err, f"{case}: {s!r} not in:\n{r.err}"


def test_chart_crds_are_the_generated_crds():
    """crds/ of the chart is a symlink to the generated crds/; what helm packages (and so what
    users install) must be the same bytes, file for file."""
    link = CHART / "crds"
    assert link.is_symlink() and os.readlink(link) == "../../crds", "charts/strata/crds must stay a symlink"
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert generated, "no generated CRDs"
    cmp = filecmp.dircmp(ROOT / "crds", link)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_packaged_chart_carries_the_generated_crds(tmp_path):
    helm("package", str(CHART), "--destination", str(tmp_path))
    (pkg,) = tmp_path.glob("strata-*.tgz")
    with tarfile.open(pkg) as tar:
        packaged = {Path(m.name).name: tar.extractfile(m).read()
                    for m in tar.getmembers() if m.name.startswith("strata/crds/") and m.isfile()}
    for p in sorted((ROOT / "crds").glob("*.yaml")):
        assert packaged.get(p.name) == p.read_bytes(), f"{p.name} differs in the packaged chart"
    extra = {n for n in packaged if n.endswith((".yaml", ".yml", ".json"))} - {
        p.name for p in (ROOT / "crds").glob("*.yaml")}
    assert not extra, extra
    # `helm show crds` prints what `helm install` applies: every file, verbatim.
    shown = helm("show", "crds", str(pkg)).out
    for p in sorted((ROOT / "crds").glob("*.yaml")):
        assert p.read_text() in shown, f"{p.name} is not what helm show crds prints"


def test_every_value_has_a_comment():
    """Each key of values.yaml has a comment line right above it (or above its block)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("-") or ":" not in s:
            continue
        prev = lines[i - 1].strip() if i else ""
        if not prev.startswith("#"):
            missing.append(f"line {i + 1}: {s}")
    # Keys of a literal default under a commented key (the resources map) are part of it.
    missing = [m for m in missing
               if not any(k in m for k in ("requests:", "cpu:", "memory:", "limits:"))]
    assert not missing, "values without a comment:\n" + "\n".join(missing)


def test_schema_knows_every_default_value():
    """values.schema.json forbids unknown keys, so every key of values.yaml must be in it."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(v, s, path):
        if isinstance(v, dict) and s.get("additionalProperties") is False:
            for k, sub in v.items():
                assert k in s["properties"], f"{path}.{k} is not in the schema"
                walk(sub, s["properties"][k], f"{path}.{k}")
    walk(values, schema, "")


# ---- the Dockerfile (built with podman for tests/k8s by tests/testbed/images.sh) ---------------

def dockerignored(rel: str, patterns: list[str]) -> bool:
    for p in patterns:
        if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel.split("/")[0], p):
            return True
        if p.startswith("**/") and fnmatch.fnmatch(Path(rel).name, p[3:]):
            return True
    return False


def dockerfile_args(text: str) -> dict[str, str]:
    """The global ARGs (before the first FROM) and their defaults."""
    head = text.split("\nFROM ", 1)[0]
    return dict(l[4:].split("=", 1) for l in head.splitlines() if l.startswith("ARG ") and "=" in l)


def test_dockerfile_stages_are_distroless_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    froms = [l.split() for l in text.splitlines() if l.startswith("FROM ")]
    stages = {f[-1]: f[1] for f in froms if len(f) == 4 and f[2] == "AS"}
    assert set(stages) == {"build", "prebuilt", "binaries", "node", "operator"}, stages
    # The bases are build arguments (the test bed builds from local ones); the defaults are
    # the public images users get.
    args = dockerfile_args(text)
    assert stages["build"] == "${BUILDER}"
    # The binaries are compiled in the build stage unless the builder says they are prebuilt
    # (the test bed's host build); both end in /out, where the runtime stages copy from.
    assert args["BINARIES"] == "build"
    assert stages["binaries"] == "${BINARIES}" and stages["prebuilt"] == "scratch"
    assert "COPY .prebuilt/ /out/" in text
    assert args["BUILDER"] == "docker.io/library/rust:${RUST_VERSION}-bookworm"
    assert args["RUNTIME_BASE"] == "gcr.io/distroless/cc-debian12:nonroot"
    for target in ("node", "operator"):
        assert stages[target] == "${RUNTIME_BASE}"
        block = text.split(f"AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "USER 65532:65532" in block
        assert f'ENTRYPOINT ["/usr/local/bin/strata-{target}"]' in block
        assert "RUN " not in block, "a runtime stage needs no shell"
        assert f"COPY --from=binaries /out/strata-{target} " in block
    assert "--locked" in text


def test_docker_context_is_a_buildable_workspace(tmp_path):
    """The files the Dockerfile's build stage gets (the repo minus .dockerignore) resolve as a
    workspace with the committed lock file: `cargo metadata --locked` on a copy. Not
    `--offline`: that needs every crate of the lock file (those of other platforms too) in the
    local cargo cache, which a fresh machine that only built for Linux does not have; cargo
    downloads what is missing (crates.io is reachable wherever the suite runs)."""
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    ctx = tmp_path / "ctx"
    for rel in listed:
        src = ROOT / rel
        if dockerignored(rel, patterns) or not src.is_file():
            continue
        dst = ctx / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    assert (ctx / "Cargo.lock").is_file() and (ctx / "node" / "src").is_dir()
    assert not (ctx / "tests").exists() and not (ctx / ".git").exists()
    r = subprocess.run(["cargo", "metadata", "--locked", "--format-version=1"],
                       cwd=ctx, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names = {p["name"] for p in json.loads(r.stdout)["packages"]}
    assert {"strata-node", "strata-operator"} <= names
