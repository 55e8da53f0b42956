"""The chart against a real kube-apiserver with etcd (no kubelet: pods never run, so the tests
play its part). Install (the API server validates every object, and Pod Security admission
judges the pod template), then run strata-operator as a local process with a token of the
chart's ServiceAccount and the Deployment's own arguments: its RBAC must let it do its job
(Lease, state ConfigMap, Topic finalizers and status) and nothing more. Then a standby takes
over, the release is upgraded, uninstalled (what holds data stays) and installed again.

The tests run in file order and build on each other."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from conftest import CHART, NAMESPACE, NODE_BIN, OPERATOR_BIN, ROOT, VALUES, Kube, template
from strata_testlib import Proc, condition, controller_state, free_port, wait_for

RELEASE = "strata"
TIERING = str(VALUES / "tiering-s3.yaml")
OPERATOR = "system:serviceaccount:%s:strata-operator" % NAMESPACE
NODE = "system:serviceaccount:%s:strata-node" % NAMESPACE
# Fake pod names: what the downward API would give each replica.
POD_A = "strata-operator-5d8c7b9f4-abcde"
POD_B = "strata-operator-5d8c7b9f4-fghij"


class State:
    """What the tests of this module hand on to each other."""
    install_output = ""
    sa_kubeconfig = ""
    ports: dict = {}
    procs: dict = {}


@pytest.fixture(scope="module")
def release(kube: Kube, tmp_path_factory):
    """The chart installed with the tiering values in a namespace that enforces the
    `restricted` Pod Security level (and warns about it, which is what a Deployment gets)."""
    kube.kubectl("create", "namespace", NAMESPACE)
    kube.kubectl("label", "namespace", NAMESPACE,
                 *(f"pod-security.kubernetes.io/{m}=restricted" for m in ("enforce", "warn", "audit")))
    # The object-store keys the example Cluster refers to: created by the user, never by the chart.
    kube.kubectl("create", "secret", "generic", "strata-s3", "-n", NAMESPACE,
                 "--from-literal=AWS_ACCESS_KEY_ID=strata", "--from-literal=AWS_SECRET_ACCESS_KEY=s3cr3t")
    r = kube.helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", TIERING)
    State.install_output = r.text
    State.logs = tmp_path_factory.mktemp("logs")
    yield r
    # SIGKILL: by now the operators are stopped, and a node's controlled shutdown with no
    # controller to answer only retries until its deadline.
    for p in State.procs.values():
        p.kill()


def manifest_objects(kube: Kube) -> list[dict]:
    out = kube.helm("get", "manifest", RELEASE, "-n", NAMESPACE).out
    return [d for d in yaml.safe_load_all(out) if d]


def operator_env_and_args(kube: Kube, pod_name: str, controller_port: int, metrics_port: int):
    """The Deployment's container as the kubelet would start it in pod `pod_name`: its env
    (downward API resolved), its args with $(VAR) expanded. The listeners move to free loopback
    ports (a pod would have its own network namespace)."""
    dep = kube.get("deployment", "strata-operator", "-n", NAMESPACE)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod_name
        else:
            pytest.fail(f"the test does not know how to resolve env {e}")
    args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in c["args"]]
    moved = {"--listen": controller_port, "--metrics-listen": metrics_port}
    args = [f"{a.split('=')[0]}=127.0.0.1:{moved[a.split('=')[0]]}"
            if a.split("=")[0] in moved else a for a in args]
    return env, args


def start_operator(kube: Kube, name: str, pod_name: str) -> Proc:
    env, args = operator_env_and_args(kube, pod_name, State.ports[name], free_port())
    assert f"--identity={pod_name}" in args
    penv = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    penv.update(env)
    # The pod's token, as the kubelet would mount it; here through a kubeconfig.
    penv["KUBECONFIG"] = State.sa_kubeconfig
    p = Proc(name, [OPERATOR_BIN, *args], State.logs / f"{name}.log", penv, inherit_env=False).start()
    State.procs[name] = p
    return p


def lease_holder(kube: Kube) -> str | None:
    lease = kube.get("lease", "strata-operator", "-n", NAMESPACE)
    return (lease or {}).get("spec", {}).get("holderIdentity")


# ---- install ---------------------------------------------------------------------------------

def test_install_is_accepted_by_the_api_server(kube: Kube, release):
    assert "STATUS: deployed" in release.out
    # Pod Security (restricted) and every other admission check had nothing to say.
    assert "would violate PodSecurity" not in State.install_output, State.install_output
    assert "Warning:" not in State.install_output, State.install_output
    objs = manifest_objects(kube)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(["Cluster", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Role",
                            "RoleBinding", "Service", "ServiceAccount", "ServiceAccount", "Topic"])
    for o in objs:
        got = kube.get(o["kind"].lower() + ("." + o["apiVersion"].split("/")[0]
                                            if "/" in o["apiVersion"] else ""),
                       o["metadata"]["name"], "-n", NAMESPACE)
        assert got is not None, f"{o['kind']} {o['metadata']['name']} not on the server"
    for crd in ("topics.strata.dev", "clusters.strata.dev", "users.strata.dev"):
        c = kube.get("crd", crd)
        assert condition(c, "Established")["status"] == "True"


def test_secure_example_is_accepted_by_the_api_server(kube: Kube, release):
    """The values that turn everything on render a Cluster and a User the API server's schema
    and CEL rules accept (server-side dry run)."""
    objs = [d for d in yaml.safe_load_all(template("-f", str(VALUES / "secure.yaml")).out) if d]
    for o in objs:
        if o["kind"] in ("Cluster", "User"):
            o["metadata"]["name"] += "-dry-run"
            r = kube.kubectl("create", "--dry-run=server", "-n", NAMESPACE, "-f", "-",
                             input=yaml.safe_dump(o), check=False)
            assert r.ok, r.text


def test_pod_security_warning_would_show(kube: Kube, release):
    """Control for the check above: the same Deployment without its security context gets the
    API server's Pod Security warning, so its absence above means something."""
    (dep,) = [o for o in manifest_objects(kube) if o["kind"] == "Deployment"]
    dep["metadata"]["name"] = "strata-operator-weakened"
    pod = dep["spec"]["template"]["spec"]
    pod.pop("securityContext")
    for c in pod["containers"]:
        c.pop("securityContext")
    r = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(dep))
    assert "would violate PodSecurity" in r.err, r.text


def test_bad_values_are_refused_at_install(kube: Kube, release):
    r = kube.helm("install", "bad", str(CHART), "-n", NAMESPACE, "--set", "operator.replicas=0",
                  check=False)
    assert r.rc != 0 and "/operator/replicas" in r.err and "minimum" in r.err, r.text
    assert kube.helm("status", "bad", "-n", NAMESPACE, check=False).rc != 0


# ---- RBAC: enough, and no more ---------------------------------------------------------------

# (verb, resource, subresource) the operator calls, in its namespace.
OPERATOR_MAY = [
    ("get", "topics.strata.dev", None), ("list", "topics.strata.dev", None),
    ("watch", "topics.strata.dev", None), ("create", "topics.strata.dev", None),
    ("patch", "topics.strata.dev", None), ("delete", "topics.strata.dev", None),
    ("patch", "topics.strata.dev", "status"),
    ("list", "clusters.strata.dev", None), ("watch", "clusters.strata.dev", None),
    ("patch", "clusters.strata.dev", "status"), ("update", "clusters.strata.dev", "finalizers"),
    ("create", "leases.coordination.k8s.io", None),
    ("get", "leases.coordination.k8s.io/strata-operator", None),
    ("update", "leases.coordination.k8s.io/strata-operator", None),
    ("get", "configmaps", None), ("create", "configmaps", None), ("update", "configmaps", None),
    ("patch", "configmaps", None), ("watch", "configmaps", None),
    ("delete", "configmaps/strata-controller-state", None),
    ("create", "statefulsets.apps", None), ("patch", "statefulsets.apps", None),
    ("create", "services", None), ("patch", "services", None),
    ("create", "poddisruptionbudgets.policy", None), ("patch", "poddisruptionbudgets.policy", None),
    ("patch", "persistentvolumeclaims", None),
    ("list", "pods", None), ("watch", "pods", None), ("delete", "pods", None),
    ("create", "events.events.k8s.io", None), ("patch", "events.events.k8s.io", None),
    ("watch", "users.strata.dev", None), ("patch", "users.strata.dev", None),
    ("patch", "users.strata.dev", "status"), ("update", "users.strata.dev", "finalizers"),
    ("get", "secrets", None), ("create", "secrets", None), ("update", "secrets", None),
    ("delete", "secrets", None), ("watch", "secrets", None),
    ("create", "networkpolicies.networking.k8s.io", None),
    ("patch", "networkpolicies.networking.k8s.io", None),
]

# What it must not do: (verb, resource, subresource, namespace); namespace "" is cluster scope.
OPERATOR_MAY_NOT = [
    ("get", "secrets", None, "default"), ("list", "secrets", None, "default"),
    ("delete", "users.strata.dev", None, NAMESPACE),
    ("get", "pods", None, NAMESPACE), ("create", "pods", None, NAMESPACE),
    ("create", "pods", "exec", NAMESPACE), ("create", "pods", "eviction", NAMESPACE),
    ("delete", "pods", None, "default"),
    ("update", "topics.strata.dev", None, NAMESPACE),
    ("delete", "clusters.strata.dev", None, NAMESPACE),
    ("patch", "clusters.strata.dev", None, NAMESPACE),
    ("delete", "configmaps", None, NAMESPACE), ("delete", "configmaps/strata-config", None, NAMESPACE),
    ("delete", "statefulsets.apps", None, NAMESPACE),
    ("delete", "services", None, NAMESPACE), ("delete", "persistentvolumeclaims", None, NAMESPACE),
    ("list", "persistentvolumeclaims", None, NAMESPACE),
    ("get", "leases.coordination.k8s.io/someone-elses", None, NAMESPACE),
    ("delete", "leases.coordination.k8s.io/strata-operator", None, NAMESPACE),
    ("create", "serviceaccounts", "token", NAMESPACE),
    ("create", "roles.rbac.authorization.k8s.io", None, NAMESPACE),
    ("create", "rolebindings.rbac.authorization.k8s.io", None, NAMESPACE),
    ("create", "events", None, NAMESPACE),
    ("list", "topics.strata.dev", None, "default"),
    ("get", "configmaps", None, "kube-system"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", None, ""),
    ("list", "namespaces", None, ""), ("list", "nodes", None, ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None, ""),
]


@pytest.mark.parametrize("verb,resource,sub", OPERATOR_MAY,
                         ids=[f"{v} {r}{'/' + s if s else ''}" for v, r, s in OPERATOR_MAY])
def test_operator_may(kube: Kube, release, verb, resource, sub):
    assert kube.can_i(verb, resource, OPERATOR, subresource=sub)


@pytest.mark.parametrize("verb,resource,sub,ns", OPERATOR_MAY_NOT,
                         ids=[f"{v} {r}{'/' + s if s else ''} in {n or 'cluster'}"
                              for v, r, s, n in OPERATOR_MAY_NOT])
def test_operator_may_not(kube: Kube, release, verb, resource, sub, ns):
    assert not kube.can_i(verb, resource, OPERATOR, namespace=ns, subresource=sub)


def test_nodes_have_no_api_access(kube: Kube, release):
    sa = kube.get("serviceaccount", "strata-node", "-n", NAMESPACE)
    assert sa["automountServiceAccountToken"] is False
    for verb, resource in (("get", "configmaps"), ("get", "secrets"), ("list", "pods"),
                           ("get", "topics.strata.dev"), ("get", "leases.coordination.k8s.io"),
                           ("list", "services"), ("get", "endpointslices.discovery.k8s.io")):
        assert not kube.can_i(verb, resource, NODE), f"nodes may {verb} {resource}"
    bindings = kube.get("rolebindings", "-n", NAMESPACE)["items"]
    assert all(s["name"] != "strata-node" for b in bindings for s in b.get("subjects", []))


# ---- the operator, run with the chart's token --------------------------------------------

def test_operator_runs_with_the_chart_token(kube: Kube, release, tmp_path_factory):
    State.sa_kubeconfig = kube.token_kubeconfig(
        "strata-operator", NAMESPACE, tmp_path_factory.mktemp("sa") / "kubeconfig")
    State.ports = {"a": free_port(), "b": free_port()}
    op = start_operator(kube, "a", POD_A)
    op.wait_log("controller listening on")
    # Leader election through the Lease; its state in the Secret the chart named (it holds
    # credentials), no ConfigMap.
    assert lease_holder(kube) == POD_A
    secret = wait_for(lambda: kube.get("secret", "strata-controller-state", "-n", NAMESPACE), 30,
                      "the state Secret")
    assert secret["type"] == "Opaque"
    assert "manifest.json" in secret["data"]
    assert "nodes" in controller_state(kube, NAMESPACE)
    assert kube.get("configmap", "strata-controller-state", "-n", NAMESPACE) is None
    # The chart's example Topic: finalizer added, status written (the topic cannot be made
    # yet: replication factor 3 and no node).
    topic = wait_for(lambda: condition(
        kube.get("topic", "orders", "-n", NAMESPACE), "Ready") and kube.get(
        "topic", "orders", "-n", NAMESPACE), 30, "a status on Topic orders")
    assert "strata.dev/topic" in topic["metadata"]["finalizers"]
    assert topic["status"]["observedGeneration"] == topic["metadata"]["generation"]
    assert condition(topic, "Ready")["status"] == "False"


def test_topic_is_created_once_a_node_joins(kube: Kube, release, tmp_path_factory):
    data = tmp_path_factory.mktemp("node")
    controllers = ",".join(f"http://127.0.0.1:{p}" for p in State.ports.values())
    node = Proc("node", [NODE_BIN, "--node-id", "1", "--controller", controllers,
                         "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data)],
                State.logs / "node.log").start()
    State.procs["node"] = node
    kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "strata.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "events"},
        "spec": {"clusterRef": {"name": "strata"}, "partitions": 2, "replicationFactor": 1,
                 "deletionPolicy": "Delete"}}))
    ready = lambda: (lambda t: t if (condition(t, "Ready") or {}).get("status") == "True" else None)(
        kube.get("topic", "events", "-n", NAMESPACE))
    topic = wait_for(ready, 60, "Topic events Ready")
    assert topic["status"]["partitions"] == 2
    assert topic["status"]["topicId"]
    assert [p["leader"] for p in topic["status"]["partitionStatus"]] == [1, 1]


def test_forbidden_calls_fail_with_the_token(kube: Kube, release):
    # Secrets are granted in the release's namespace (the state, certificates, users'
    # settings), nowhere else.
    for args in (["get", "secrets", "-n", "default"], ["get", "secret", "strata-s3", "-n", "default"],
                 ["delete", "configmap", "strata-config"],
                 ["run", "shell", "--image=busybox", "--restart=Never"],
                 ["get", "topics", "-n", "default"], ["get", "nodes"],
                 ["create", "clusterrolebinding", "x", "--clusterrole=cluster-admin",
                  f"--serviceaccount={NAMESPACE}:strata-operator"]):
        r = kube.kubectl(*args, kubeconfig=State.sa_kubeconfig, check=False)
        assert r.rc != 0 and "forbidden" in r.err.lower(), f"kubectl {' '.join(args)}: {r.text}"
    assert kube.get("secret", "strata-controller-state", "-n", NAMESPACE) is not None


def test_cluster_objects_are_applied_with_the_chart_token(kube: Kube, release):
    """The operator makes the example Cluster's objects with the chart's RBAC (server-side
    apply: create and patch), with the node image and controller address the chart gave it."""
    for kind, name in (("statefulset", "strata"), ("service", "strata-nodes"),
                       ("service", "strata-bootstrap"), ("configmap", "strata-config"),
                       ("poddisruptionbudget", "strata")):
        wait_for(lambda: kube.get(kind, name, "-n", NAMESPACE), 30, f"{kind} {name}")
    sts = kube.get("statefulset", "strata", "-n", NAMESPACE)
    (node,) = sts["spec"]["template"]["spec"]["containers"]
    assert node["image"] == "strata-node:0.1.0"
    assert f"http://strata-controller.{NAMESPACE}.svc:9093" in node["args"]
    env = {e["name"]: e for e in node.get("env", [])}
    # The keys reach the nodes by reference; the operator never read the Secret.
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in env.values()
            if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs and set(refs) == {"strata-s3"}


def test_node_pods_pass_restricted_pod_security(kube: Kube, release):
    """The StatefulSet the operator made, submitted again as a dry run: the namespace enforces
    the restricted level, and the API server has no Pod Security warning for its pods."""
    sts = kube.get("statefulset", "strata", "-n", NAMESPACE)
    meta = sts["metadata"]
    sts["metadata"] = {"name": "strata-dry-run", "labels": meta.get("labels", {})}
    sts.pop("status", None)
    r = kube.kubectl("create", "--dry-run=server", "-n", NAMESPACE, "-f", "-",
                     input=yaml.safe_dump(sts))
    assert "Warning" not in r.err, r.err


def test_node_pods_mount_no_token(kube: Kube, release):
    sts = kube.get("statefulset", "strata", "-n", NAMESPACE)
    pod = sts["spec"]["template"]["spec"]
    sa = pod.get("serviceAccountName", "default")
    account = kube.get("serviceaccount", sa, "-n", NAMESPACE) or {}
    automount = pod.get("automountServiceAccountToken",
                        account.get("automountServiceAccountToken", True))
    assert automount is False, f"node pods get the token of ServiceAccount {sa}"


def test_deleting_a_topic_runs_its_finalizer(kube: Kube, release):
    kube.kubectl("delete", "topic", "events", "-n", NAMESPACE, "--wait=false")
    wait_for(lambda: kube.get("topic", "events", "-n", NAMESPACE) is None, 30, "Topic events to go")
    State.procs["a"].wait_log("deleted topic with its resource")


def controller_topics(kube: Kube) -> set[str]:
    return set(controller_state(kube, NAMESPACE)["topics"])


def test_deleting_a_retained_topic_marks_its_tiered_data_to_keep(kube: Kube, release):
    """Deleting a Topic resource deletes the Kafka topic whatever its deletionPolicy (one
    source of truth); Retain first marks the topic so the nodes keep its objects in the
    bucket (tests/operator checks the bucket itself)."""
    kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "strata.dev/v1alpha1", "kind": "Topic", "metadata": {"name": "kept"},
        "spec": {"clusterRef": {"name": "strata"}, "partitions": 1, "replicationFactor": 1,
                 "deletionPolicy": "Retain"}}))
    wait_for(lambda: (condition(kube.get("topic", "kept", "-n", NAMESPACE),
                                "Ready") or {}).get("status") == "True", 30, "Topic kept Ready")
    uid = kube.get("topic", "kept", "-n", NAMESPACE)["metadata"]["uid"]
    kube.kubectl("delete", "topic", "kept", "-n", NAMESPACE, "--wait=false")
    wait_for(lambda: (
        kube.get("topic", "kept", "-n", NAMESPACE) or {"metadata": {"uid": None}}
    )["metadata"]["uid"] != uid, 30, "the resource of Topic kept to go")
    assert "kept" not in controller_topics(kube), "the Kafka topic outlived its resource"
    State.procs["a"].wait_log("deleted topic with its resource")


def test_the_operator_was_never_forbidden(release):
    log = State.procs["a"].log_text()
    assert "forbidden" not in log.lower(), log[-3000:]


def test_a_standby_takes_over(kube: Kube, release):
    b = start_operator(kube, "b", POD_B)
    b.wait_log("standing by")
    assert lease_holder(kube) == POD_A
    assert State.procs["a"].stop(timeout=15) == 0
    assert "released the lease" in State.procs["a"].log_text()
    b.wait_log("controller listening on", timeout=20)
    assert lease_holder(kube) == POD_B
    # The new leader carries on from the state in the ConfigMap (no new cluster), the node
    # finds it at the next address, and a new Topic gets made.
    assert "new cluster created" not in b.log_text()
    kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "strata.dev/v1alpha1", "kind": "Topic", "metadata": {"name": "after-failover"},
        "spec": {"clusterRef": {"name": "strata"}, "partitions": 1, "replicationFactor": 1}}))
    wait_for(lambda: (condition(kube.get(
        "topic", "after-failover", "-n", NAMESPACE), "Ready") or {}).get("status") == "True",
        60, "Topic after-failover Ready under the new leader")
    assert "forbidden" not in b.log_text().lower()


# ---- upgrade, uninstall, install again -------------------------------------------------------

def test_upgrade(kube: Kube, release):
    # CRDs first: helm upgrade never touches crds/ (README, Kubernetes section).
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    r = kube.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "-f", TIERING,
                  "--set", "operator.replicas=3", "--set", "operator.controller.numPartitions=3")
    assert "STATUS: deployed" in r.out and "REVISION: 2" in r.out, r.text
    assert "Warning:" not in r.text, r.text
    dep = kube.get("deployment", "strata-operator", "-n", NAMESPACE)
    assert dep["spec"]["replicas"] == 3
    assert "--num-partitions=3" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_uninstall_keeps_what_holds_data(kube: Kube, release):
    State.procs["b"].stop(timeout=15)
    r = kube.helm("uninstall", RELEASE, "-n", NAMESPACE)
    assert "kept due to the resource policy" in r.text, r.text
    for kind, name in (("deployment", "strata-operator"), ("role", "strata-operator"),
                       ("rolebinding", "strata-operator"), ("serviceaccount", "strata-operator"),
                       ("service", "strata-controller"), ("poddisruptionbudget", "strata-operator"),
                       ("networkpolicy", "strata-operator")):
        assert kube.get(kind, name, "-n", NAMESPACE) is None, f"{kind} {name} was not removed"
    for kind, name, ns in (("crd", "topics.strata.dev", None), ("crd", "clusters.strata.dev", None),
                           ("cluster", "strata", NAMESPACE), ("topic", "orders", NAMESPACE),
                           ("serviceaccount", "strata-node", NAMESPACE),
                           ("secret", "strata-controller-state", NAMESPACE),
                           ("lease", "strata-operator", NAMESPACE),
                           ("secret", "strata-s3", NAMESPACE)):
        assert kube.get(kind, name, *(["-n", ns] if ns else [])) is not None, \
            f"{kind} {name} did not survive the uninstall"


def test_install_again_adopts_what_was_kept(kube: Kube, release):
    r = kube.helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", TIERING)
    assert "STATUS: deployed" in r.out, r.text
    assert kube.get("serviceaccount", "strata-operator", "-n", NAMESPACE) is not None
    topic = kube.get("topic", "orders", "-n", NAMESPACE)
    assert topic["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
