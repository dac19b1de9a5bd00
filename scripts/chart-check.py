#!/usr/bin/env python3
"""The checks of scripts/chart-check.sh that need more than helm: run by it, inside its venv.

  chart-check.py validate FILE...          every manifest against the Kubernetes schemas (strict)
  chart-check.py invariants NAME=FILE...   what the chart promises, on each rendered release
  chart-check.py flags TASSIS_BIN FILE...  every TASSIS_* variable the chart sets is a flag of its role
  chart-check.py readme                    helm/tassis/README.md lists every value of values.yaml
  chart-check.py tiltfile HELM             evaluates the Tiltfile against stand-ins of Tilt's API
  chart-check.py dockerfile                the Dockerfile's stages, and the build context after
                                           .dockerignore holds what the workspace build reads

Each prints one line per finding and exits non-zero if any check failed.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "tassis"
KUBERNETES_VERSION = "1.35.0"
ROLES = ["gateway", "keystore", "messaging", "attachments"]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def done(what):
    if failures:
        print(f"chart-check: {what}: {len(failures)} failed")
        sys.exit(1)
    print(f"chart-check: {what}: ok")


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# ------------------------------------------------------------------------------------------------
# validate
# ------------------------------------------------------------------------------------------------
# The part of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) CRD schema the
# chart uses, strict like the Kubernetes schemas (kubernetes-validate knows no CRDs).
_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": _STR, "namespace": _STR, "labels": _LABELS, "annotations": _LABELS},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}},
                },
                "podTargetLabels": {"type": "array", "items": _STR},
                "targetLabels": {"type": "array", "items": _STR},
                "jobLabel": _STR,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": _STR,
                            "path": _STR,
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "honorLabels": {"type": "boolean"},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}


def validate_crd(doc):
    """Validates kinds of CRDs the chart renders; returns False for kinds it does not know."""
    import jsonschema

    if doc.get("apiVersion") == "monitoring.coreos.com/v1" and doc.get("kind") == "ServiceMonitor":
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
        return True
    return False


def cmd_validate(files):
    import jsonschema
    import kubernetes_validate.utils as kv

    count = 0
    for path in files:
        for doc in load_docs(path):
            name = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                if validate_crd(doc):
                    count += 1
                    continue
            except jsonschema.ValidationError as e:
                path_ = ".".join(str(p) for p in e.path)
                fail(f"{name}: {path_}: {e.message}")
                continue
            try:
                kv.validate(doc, KUBERNETES_VERSION, strict=True)
                count += 1
            except kv.SchemaNotFoundError as e:
                fail(f"{name}: {e.message}")
            except kv.ValidationError as e:
                path_ = ".".join(str(p) for p in e.path)
                fail(f"{name}: {path_}: {e.message}")
            except kv.VersionNotSupportedError as e:
                fail(e.message)
                break
    print(f"chart-check: {count} manifests valid against Kubernetes {KUBERNETES_VERSION} (strict)")
    done("schema validation")


# ------------------------------------------------------------------------------------------------
# invariants
# ------------------------------------------------------------------------------------------------
def duration_seconds(s):
    m = re.fullmatch(r"(\d+)s", s or "")
    return int(m.group(1)) if m else None


def env_map(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_release(name, path):
    docs = load_docs(path)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind.get("HorizontalPodAutoscaler", [])}
    where = lambda obj: f"{name}: {obj['kind']}/{obj['metadata']['name']}"  # noqa: E731

    roles = {}
    for dep in deployments.values():
        pod = dep["spec"]["template"]
        role = pod["metadata"]["labels"].get("app.kubernetes.io/component")
        roles[role] = dep
    if sorted(roles) != sorted(ROLES):
        fail(f"{name}: Deployments for roles {sorted(roles)}, expected {sorted(ROLES)}")
        return

    for role, dep in roles.items():
        w = where(dep)
        spec = dep["spec"]
        pod = spec["template"]
        ps = pod["spec"]
        labels = pod["metadata"]["labels"]
        if not matches(spec["selector"]["matchLabels"], labels):
            fail(f"{w}: selector does not match the pod labels")
        (c,) = ps["containers"]
        if c.get("args", [None])[0] != role:
            fail(f"{w}: the container does not run `tassis {role}` (args {c.get('args')})")
        # Security context: non-root, no privilege escalation, nothing added.
        psc, csc = ps.get("securityContext", {}), c.get("securityContext", {})
        if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
            fail(f"{w}: runAsNonRoot is not set")
        if csc.get("allowPrivilegeEscalation") is not False:
            fail(f"{w}: allowPrivilegeEscalation is not false")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            fail(f"{w}: capabilities are not dropped")
        seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            fail(f"{w}: no seccomp profile (Pod Security Standard `restricted`)")
        if ps.get("enableServiceLinks") is not False:
            fail(f"{w}: service links would add TASSIS_*_PORT variables")
        if name != "dev" and csc.get("readOnlyRootFilesystem") is not True:
            fail(f"{w}: the root filesystem is writable")
        # Probes on the admin endpoints.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe not in c:
                fail(f"{w}: no {probe}")
        for probe, path_ in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz")):
            if c.get(probe, {}).get("httpGet", {}).get("path") != path_:
                fail(f"{w}: {probe} is not GET {path_}")
        rp = c.get("readinessProbe", {})
        if rp.get("httpGet", {}).get("path") != "/readyz" and "grpc" not in rp:
            fail(f"{w}: readinessProbe is neither GET /readyz nor gRPC health")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        env = env_map(c)
        names = [e["name"] for e in c.get("env", [])]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            fail(f"{w}: environment variables set twice: {dups}")
        admin = env.get("TASSIS_ADMIN_LISTEN", "")
        if not admin.endswith(f":{ports.get('admin')}"):
            fail(f"{w}: TASSIS_ADMIN_LISTEN {admin!r} is not the admin port {ports.get('admin')}")
        main_port = ports.get("http" if role == "gateway" else "grpc")
        if not env.get("TASSIS_LISTEN", "").endswith(f":{main_port}"):
            fail(f"{w}: TASSIS_LISTEN {env.get('TASSIS_LISTEN')!r} is not the container port {main_port}")
        # Graceful drain: preStop sleep + --shutdown-grace fit in the termination grace period.
        grace = duration_seconds(env.get("TASSIS_SHUTDOWN_GRACE"))
        if grace is None:
            fail(f"{w}: TASSIS_SHUTDOWN_GRACE {env.get('TASSIS_SHUTDOWN_GRACE')!r} is not whole seconds")
            grace = 0
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        period = ps.get("terminationGracePeriodSeconds", 30)
        if sleep + grace > period:
            fail(f"{w}: preStop {sleep}s + shutdown grace {grace}s exceed terminationGracePeriodSeconds {period}")
        # The Service of the role.
        svc = services.get(dep["metadata"]["name"])
        if not svc:
            fail(f"{w}: no Service of the same name")
        else:
            if not matches(svc["spec"]["selector"], labels) or svc["spec"]["selector"] != spec["selector"]["matchLabels"]:
                fail(f"{where(svc)}: selector differs from the Deployment's")
            svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
            want = "http" if role == "gateway" else "grpc"
            if want not in svc_ports or svc_ports[want]["targetPort"] not in (want, main_port):
                fail(f"{where(svc)}: no port `{want}` targeting the container's {want} port")
        # Autoscaled Deployments leave replicas to the HPA.
        if dep["metadata"]["name"] in hpas and "replicas" in spec:
            fail(f"{w}: sets replicas although an HPA scales it")
        # Only the gateways get an API token.
        token = ps.get("automountServiceAccountToken")
        if role != "gateway" and token is not False:
            fail(f"{w}: mounts a service account token")

    # The gateways reach the internal services by their Services.
    gw = roles["gateway"]
    gw_env = env_map(gw["spec"]["template"]["spec"]["containers"][0])
    ns = gw["metadata"]["namespace"]
    for role, var in (("keystore", "TASSIS_KEYSTORE"), ("attachments", "TASSIS_ATTACHMENTS")):
        svc = services[roles[role]["metadata"]["name"]]
        url = f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
        if gw_env.get(var) != url:
            fail(f"{name}: gateway {var}={gw_env.get(var)!r}, the {role} Service is {url}")
    msg_svc = services[roles["messaging"]["metadata"]["name"]]
    if "TASSIS_MESSAGING_SERVICE" in gw_env:
        want = f"{ns}/{msg_svc['metadata']['name']}"
        if gw_env["TASSIS_MESSAGING_SERVICE"] != want:
            fail(f"{name}: gateway TASSIS_MESSAGING_SERVICE={gw_env['TASSIS_MESSAGING_SERVICE']!r}, expected {want!r}")
        port_name = gw_env.get("TASSIS_MESSAGING_PORT_NAME")
        if port_name not in {p["name"] for p in msg_svc["spec"]["ports"]}:
            fail(f"{name}: messaging Service has no port named {port_name!r} (--messaging-port-name)")
        if msg_svc["spec"].get("clusterIP") == "None" or msg_svc["spec"].get("type", "ClusterIP") != "ClusterIP":
            fail(f"{name}: the messaging Service should be a plain ClusterIP Service")
        gw_pod = gw["spec"]["template"]["spec"]
        if gw_pod.get("automountServiceAccountToken") is not True:
            fail(f"{name}: the gateways discover messaging but get no service account token")
        # RBAC: exactly list+watch on EndpointSlices, bound to the gateways' ServiceAccount.
        rbac_roles = by_kind.get("Role", [])
        if rbac_roles:
            (r,) = rbac_roles
            rules = r["rules"]
            if rules != [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]:
                fail(f"{where(r)}: grants more or other than list/watch on endpointslices: {rules}")
            (rb,) = by_kind.get("RoleBinding", [])
            subjects = [(s["kind"], s["name"]) for s in rb["subjects"]]
            if subjects != [("ServiceAccount", gw_pod["serviceAccountName"])] or rb["roleRef"]["name"] != r["metadata"]["name"]:
                fail(f"{where(rb)}: binds {subjects} to {rb['roleRef']['name']}, not the gateways' ServiceAccount to {r['metadata']['name']}")
        if by_kind.get("ClusterRole") or by_kind.get("ClusterRoleBinding"):
            fail(f"{name}: cluster-wide RBAC rendered")
    elif not gw_env.get("TASSIS_MESSAGING"):
        fail(f"{name}: gateway has neither TASSIS_MESSAGING_SERVICE nor TASSIS_MESSAGING")

    # NetworkPolicies: the internal gRPC ports accept only gateways (and messaging → keystore on
    # the embedded backends).
    gw_labels = gw["spec"]["selector"]["matchLabels"]
    for np in by_kind.get("NetworkPolicy", []):
        role = np["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        if role in (None, "gateway"):
            continue
        for rule in np["spec"]["ingress"]:
            ports = [p["port"] for p in rule.get("ports", [])]
            if "grpc" not in ports:
                continue
            peers = rule.get("from")
            if not peers:
                fail(f"{where(np)}: gRPC open to everyone")
                continue
            for peer in peers:
                sel = peer.get("podSelector", {}).get("matchLabels", {})
                allowed = sel == gw_labels or (role == "keystore" and sel.get("app.kubernetes.io/component") == "messaging")
                if not allowed or "namespaceSelector" in peer or "ipBlock" in peer:
                    fail(f"{where(np)}: gRPC allowed from {peer}")

    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            fail(f"{where(hpa)}: scales a Deployment that is not rendered")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = pdb["spec"]["selector"]["matchLabels"]
        if not any(matches(sel, d["spec"]["template"]["metadata"]["labels"]) for d in deployments.values()):
            fail(f"{where(pdb)}: selects no pods")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        targets = [svc for svc in services.values() if matches(sel, svc["metadata"]["labels"])]
        if len(targets) != 1:
            fail(f"{where(sm)}: selects {len(targets)} Services, not the one metrics Service")
            continue
        (svc,) = targets
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in ports or ports[ep["port"]]["targetPort"] != "admin":
                fail(f"{where(sm)}: endpoint port {ep['port']} is not the admin port of {svc['metadata']['name']}")
            if ep.get("path") != "/metrics":
                fail(f"{where(sm)}: scrapes {ep.get('path')}, not /metrics")
        pods = [d for d in deployments.values() if matches(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        if len(pods) != len(deployments):
            fail(f"{where(svc)}: selects {len(pods)} of {len(deployments)} roles' pods")
        if sm["metadata"].get("namespace") != svc["metadata"]["namespace"]:
            names = sm["spec"].get("namespaceSelector", {}).get("matchNames", [])
            if names != [svc["metadata"]["namespace"]]:
                fail(f"{where(sm)}: in another namespace without selecting {svc['metadata']['namespace']}")
    fed_ingresses = check_federation(name, docs, roles, where)
    for ing in by_kind.get("Ingress", []):
        if any(ing is f for f in fed_ingresses):
            continue
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                if p["backend"]["service"]["name"] != gw["metadata"]["name"]:
                    fail(f"{where(ing)}: routes to {p['backend']['service']['name']}, not the gateways")
    return len(docs)


def check_federation(name, docs, roles, where):
    """Federation on: keystore and messaging agree on the deployment's name and presence directory,
    messaging listens where its `federation` port is, and the federation Service and Ingress (TLS:
    peers speak gRPC over HTTP/2) lead there. Off: no federation object. Returns the federation
    Ingresses (the gateway Ingress check skips them)."""
    env = {}
    for role, dep in roles.items():
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        env[role] = {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
    fed_ingresses = [d for d in docs if d["kind"] == "Ingress" and d["metadata"]["name"].endswith("-federation")]
    (msg,) = roles["messaging"]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in msg.get("ports", [])}
    if "TASSIS_PRESENCE_REDIS_URL" not in env["messaging"]:
        if fed_ingresses or "federation" in ports:
            fail(f"{name}: federation objects rendered without federation")
        return fed_ingresses
    for var in ("TASSIS_PUBLIC_ADDR", "TASSIS_PRESENCE_REDIS_URL", "TASSIS_PRESENCE_REDIS_PASSWORD_FILE"):
        if env["keystore"].get(var) != env["messaging"].get(var):
            fail(f"{name}: federation: keystore {var}={env['keystore'].get(var)!r}, messaging {env['messaging'].get(var)!r}")
    if not env["messaging"].get("TASSIS_FEDERATION_LISTEN", "").endswith(f":{ports.get('federation')}"):
        fail(f"{name}: federation: messaging TASSIS_FEDERATION_LISTEN is not its federation port {ports.get('federation')}")
    labels = roles["messaging"]["spec"]["template"]["metadata"]["labels"]
    fed_svcs = [
        d for d in docs
        if d["kind"] == "Service" and any(p["name"] == "federation" for p in d["spec"]["ports"])
    ]
    if len(fed_svcs) != 1 or not matches(fed_svcs[0]["spec"]["selector"], labels):
        fail(f"{name}: federation: no single Service of messaging's federation port")
    for ing in fed_ingresses:
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                b = p["backend"]["service"]
                if not fed_svcs or b["name"] != fed_svcs[0]["metadata"]["name"] or b["port"].get("name") != "federation":
                    fail(f"{where(ing)}: routes to {b}, not the federation Service")
        if not ing["spec"].get("tls"):
            fail(f"{where(ing)}: has no TLS (peers speak gRPC: HTTP/2)")
    print(f"chart-check: {name}: federation checked")
    return fed_ingresses


def cmd_invariants(args):
    for arg in args:
        name, path = arg.split("=", 1)
        n = check_release(name, path)
        print(f"chart-check: {name}: {n} objects checked")
    done("chart invariants")


# ------------------------------------------------------------------------------------------------
# flags
# ------------------------------------------------------------------------------------------------
def cmd_flags(binary, files):
    helps = {}
    for role in ROLES:
        out = subprocess.run([binary, role, "--help"], capture_output=True, text=True, check=True).stdout
        helps[role] = set(re.findall(r"env: (TASSIS_[A-Z0-9_]+)", out))
    checked = 0
    for path in files:
        for d in load_docs(path):
            if d["kind"] != "Deployment":
                continue
            c = d["spec"]["template"]["spec"]["containers"][0]
            role = c["args"][0]
            for e in c.get("env", []):
                if e["name"].startswith("TASSIS_"):
                    checked += 1
                    if e["name"] not in helps[role]:
                        fail(f"{path}: {role} sets {e['name']}, which `tassis {role} --help` does not list")
            for a in c["args"][1:]:
                if a.startswith("--"):
                    var = "TASSIS_" + a[2:].split("=")[0].replace("-", "_").upper()
                    if var not in helps[role]:
                        fail(f"{path}: {role} passes {a}, which `tassis {role} --help` does not list")
    print(f"chart-check: {checked} TASSIS_* variables matched against `{binary} <role> --help`")
    done("flags")


# ------------------------------------------------------------------------------------------------
# readme
# ------------------------------------------------------------------------------------------------
# Values that are Kubernetes objects, documented as a whole rather than field by field.
WHOLE_VALUES = {"podSecurityContext", "containerSecurityContext", "resources", "behavior"}


def leaf_keys(value, prefix=""):
    """Dotted paths of the values a user sets: leaves, and maps/lists given whole."""
    whole = prefix.rsplit(".", 1)[-1] in WHOLE_VALUES
    if isinstance(value, dict) and value and not whole and not all(isinstance(k, str) and "/" in k for k in value):
        for k, v in value.items():
            yield from leaf_keys(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix


def cmd_readme():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    if "\n## Values\n" not in readme:
        fail("helm/tassis/README.md has no `## Values` section")
        done("chart README")
    section = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", section, re.M))
    keys = set()
    for key in leaf_keys(values):
        head, _, rest = key.partition(".")
        keys.add(f"<role>.{rest}" if head in ROLES and f"<role>.{rest}" in documented else key)
    missing = sorted(k for k in keys if k not in documented)
    for k in missing:
        fail(f"helm/tassis/README.md does not list the value `{k}`")
    stale = sorted(k for k in documented if k not in keys and not k.startswith("<role>."))
    role_keys = {k for k in documented if k.startswith("<role>.")}
    stale += sorted(k for k in role_keys if k not in keys)
    for k in stale:
        fail(f"helm/tassis/README.md lists `{k}`, which values.yaml does not have")
    print(f"chart-check: {len(keys)} values documented")
    done("chart README")


# ------------------------------------------------------------------------------------------------
# tiltfile
# ------------------------------------------------------------------------------------------------
def cmd_tiltfile(helm):
    import starlark as sl

    path = ROOT / "Tiltfile"
    src = path.read_text()
    for mode in ("dev", "release"):
        state = {"resources": {}, "workloads": set(), "images": [], "image_refs": set(), "deps": []}

        def need(p, what):
            if not (ROOT / p).exists():
                fail(f"Tiltfile ({mode}): {what} {p!r} does not exist")

        def workloads_of(docs):
            for d in docs:
                if d.get("kind") in WORKLOAD_KINDS:
                    state["workloads"].add(d["metadata"]["name"])
                    spec = d["spec"]
                    if d["kind"] == "CronJob":
                        spec = spec["jobTemplate"]["spec"]
                    if d["kind"] != "Pod":
                        spec = spec["template"]["spec"]
                    for c in spec.get("containers", []):
                        state["images"].append((d["metadata"]["name"], c["image"]))

        # Stand-ins with the signatures of Tilt's API (internal/tiltfile/api/__init__.py of Tilt):
        # a keyword Tilt does not take fails here as it would in Tilt.
        def k8s_namespace():
            return "tilt-check"

        def getenv(key, default=None):
            return "release" if (mode == "release" and key == "TASSIS_TILT_IMAGE") else default

        def local(command, quiet=False, command_bat="", echo_off=False, env=None, dir="", stdin=None):
            m = re.fullmatch(r"mkdir -p ([\w./-]+)", command.strip())
            if not m:
                fail(f"Tiltfile ({mode}): local({command!r}) runs at load time; only mkdir is expected")
            return ""

        def k8s_yaml(yaml_, allow_duplicates=False):
            items = yaml_ if isinstance(yaml_, list) else [yaml_]
            for item in items:
                if isinstance(item, str) and not item.lstrip().startswith(("apiVersion", "#", "---")) and "\n" not in item:
                    need(item, "k8s_yaml file")
                    if (ROOT / item).exists():
                        workloads_of(load_docs(ROOT / item))
                else:
                    workloads_of([d for d in yaml.safe_load_all(item) if d])

        def helm_(pathToChartDir, name="", namespace="", values=None, set=None, kube_version="", skip_crds=False):
            need(pathToChartDir, "chart")
            cmd = [helm, "template", name or "chart", str(ROOT / pathToChartDir)]
            if namespace:
                cmd += ["--namespace", namespace]
            for v in values or []:
                need(v, "values file")
                cmd += ["--values", str(ROOT / v)]
            for s in set or []:
                cmd += ["--set", s]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"Tiltfile ({mode}): helm({pathToChartDir!r}) fails: {r.stderr.strip()}")
                return ""
            return r.stdout

        def k8s_resource(workload="", new_name="", port_forwards=None, extra_pod_selectors=None, trigger_mode=None,
                         resource_deps=None, objects=None, auto_init=True, pod_readiness="", links=None,
                         labels=None, discovery_strategy=""):
            if workload not in state["workloads"]:
                fail(f"Tiltfile ({mode}): k8s_resource({workload!r}) names no workload (have {sorted(state['workloads'])})")
            state["resources"][new_name or workload] = "k8s"
            state["deps"].append((new_name or workload, resource_deps or []))

        def local_resource(name, cmd="", deps=None, trigger_mode=None, resource_deps=None, ignore=None,
                           auto_init=True, serve_cmd="", cmd_bat="", serve_cmd_bat="", allow_parallel=False,
                           links=None, env=None, serve_env=None, readiness_probe=None, dir="",
                           serve_dir="", labels=None):
            for d in deps or []:
                need(d, "local_resource dep")
            state["resources"][name] = "local"
            state["deps"].append((name, resource_deps or []))

        def docker_build(ref, context, build_args=None, dockerfile="Dockerfile", dockerfile_contents="",
                         live_update=None, match_in_env_vars=False, ignore=None, only=None, entrypoint=None,
                         target="", ssh="", network="", secret="", extra_tag="", container_args=None,
                         cache_from=None, pull=False, platform="", extra_hosts=None):
            if context.startswith(".tmp/"):
                pass  # made by the compile step
            else:
                need(context, "docker_build context")
            if not dockerfile_contents:
                need(dockerfile, "Dockerfile")
                if target and not re.search(rf"^FROM .* AS {re.escape(target)}\s*$", (ROOT / dockerfile).read_text(), re.M | re.I):
                    fail(f"Tiltfile ({mode}): {dockerfile} has no stage {target!r}")
            for step in live_update or []:
                if isinstance(step, (tuple, list)) and step[0] == "sync" and not step[1].startswith(context.rstrip("/") + "/"):
                    fail(f"Tiltfile ({mode}): sync({step[1]!r}) is outside the build context {context!r}")
            state["image_refs"].add(ref)

        def docker_build_with_restart(ref, context, entrypoint, live_update, base_suffix="-base",
                                      restart_file="/.restart-proc", **kwargs):
            if not live_update:
                fail(f"Tiltfile ({mode}): docker_build_with_restart needs live_update steps")
            docker_build(ref, context, live_update=live_update, entrypoint=entrypoint, **kwargs)

        def sync(local_path, remote_path):
            return ("sync", local_path, remote_path)

        def run(cmd, trigger=None, echo_off=False):
            return ("run", cmd)

        def link(url, name=""):
            return ("link", url, name)

        dialect = sl.Dialect.extended()
        try:
            ast = sl.parse("Tiltfile", src, dialect)
        except sl.StarlarkError as e:
            fail(f"Tiltfile does not parse: {e}")
            break
        glb = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print])
        ext = sl.Module()
        ext.add_callable("docker_build_with_restart", docker_build_with_restart)
        frozen_ext = ext.freeze()

        def loader(module):
            if module != "ext://restart_process":
                fail(f"Tiltfile ({mode}): load({module!r}) is not stood in for by this check")
            return frozen_ext

        mod = sl.Module()
        for fn in (k8s_namespace, local, k8s_yaml, k8s_resource, local_resource, docker_build, sync, run, link):
            mod.add_callable(fn.__name__, fn)
        mod.add_callable("helm", helm_)
        mod.add_callable("_getenv", getenv)
        sl.eval(mod, sl.parse("prelude", "os = struct(getenv = _getenv)", dialect), glb)
        try:
            sl.eval(mod, ast, glb, sl.FileLoader(loader))
        except sl.StarlarkError as e:
            fail(f"Tiltfile ({mode}): {e}")
            continue
        for name, deps in state["deps"]:
            for d in deps:
                if d not in state["resources"]:
                    fail(f"Tiltfile ({mode}): resource {name!r} depends on unknown resource {d!r}")
        for ref in state["image_refs"]:
            users = [w for w, img in state["images"] if img.split("@")[0].rsplit(":", 1)[0] == ref]
            if not users:
                fail(f"Tiltfile ({mode}): image {ref!r} is used by no workload")
        print(f"chart-check: Tiltfile ({mode}): {len(state['resources'])} resources, images {sorted(state['image_refs'])}")
    done("Tiltfile")


# ------------------------------------------------------------------------------------------------
# dockerfile (no Docker engine here: the checks that need none)
# ------------------------------------------------------------------------------------------------
def dockerignore_regex(pattern):
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over relative paths."""
    p = pattern.strip().lstrip("/").rstrip("/")
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif p.startswith("**", i):
            out += ".*"
            i += 2
        elif p[i] == "*":
            out += "[^/]*"
            i += 1
        elif p[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(p[i])
            i += 1
    # A pattern naming a directory excludes everything under it.
    return re.compile(out + "(?:/.*)?$")


def build_context():
    """Files of the repository Docker would send as the build context (tracked or not, not ignored
    by git), after .dockerignore."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        rules.append((neg, dockerignore_regex(line[1:] if neg else line)))
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    kept = set()
    for f in listed:
        if not (ROOT / f).exists():
            continue
        excluded = False
        for neg, rx in rules:
            if rx.match(f):
                excluded = not neg
        if not excluded:
            kept.add(f)
    return kept


def cmd_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    stages, final = [], None
    for ln in lines:
        m = re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", ln, re.I)
        if m:
            final = {"image": m.group(1), "name": m.group(2), "lines": []}
            stages.append(final)
            continue
        if final is None:
            if not re.match(r"ARG\s", ln, re.I):
                fail(f"Dockerfile: {ln!r} before the first FROM")
            continue
        final["lines"].append(ln)
        m = re.search(r"--from=(\S+)", ln)
        if m and m.group(1) not in [s["name"] for s in stages[:-1]]:
            fail(f"Dockerfile: {ln!r} copies from an unknown or later stage")
    names = [s["name"] for s in stages]
    if final is None or final["name"] != "runtime":
        fail("Dockerfile: the last stage (the default build target) must be `runtime`")
    else:
        body = "\n".join(final["lines"])
        if not re.search(r"^USER\s+(?!0\b|root\b)\S+", body, re.M):
            fail("Dockerfile: the runtime stage does not switch to a non-root USER")
        if not re.search(r'^ENTRYPOINT\s+\["[^"]*tassis"\]', body, re.M):
            fail("Dockerfile: the runtime stage's ENTRYPOINT is not the tassis binary")
        if re.search(r"^(RUN|COPY\s+(?!--from))", body, re.M):
            fail("Dockerfile: the runtime stage builds or copies from the context; it should only take the binary")
    for needed in ("chef", "planner", "builder"):
        if needed not in names:
            fail(f"Dockerfile: no stage {needed!r} (Tiltfile and the dependency cache rely on it)")
    cook = [ln for s in stages for ln in s["lines"] if "cargo chef cook" in ln]
    build = [ln for s in stages if s["name"] == "builder" for ln in s["lines"] if "cargo build" in ln]
    for ln in cook + build:
        if "--release" not in ln or "--package tassis" not in ln:
            fail(f"Dockerfile: {ln!r}: cook and build must share the profile and package (--release --package tassis)")

    # The context: the workspace, every member, what build scripts and include_*! read.
    ctx = build_context()
    cargo = ROOT / "Cargo.toml"
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = None
    needed = {"Cargo.toml", "Cargo.lock"}
    members = []
    if tomllib:
        members = tomllib.loads(cargo.read_text())["workspace"]["members"]
    for m in members:
        needed.add(f"{m}/Cargo.toml")
        for f in (ROOT / m).rglob("*"):
            if f.is_file() and f.suffix in (".rs", ".proto") and "target" not in f.relative_to(ROOT).parts:
                needed.add(str(f.relative_to(ROOT)))
    for f in sorted(needed):
        if (ROOT / f).exists() and f not in ctx:
            fail(f".dockerignore excludes {f}, which the build needs")
    for f in ctx:
        if f.startswith(("target/", ".tmp/", ".git/", "helm/", "k8s/")):
            fail(f"the build context includes {f}")
    print(f"chart-check: Dockerfile stages {names}; build context {len(ctx)} files, {len(members)} workspace members in it")
    done("Dockerfile")


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "validate":
        cmd_validate(args)
    elif cmd == "invariants":
        cmd_invariants(args)
    elif cmd == "flags":
        cmd_flags(args[0], args[1:])
    elif cmd == "readme":
        cmd_readme()
    elif cmd == "tiltfile":
        cmd_tiltfile(args[0])
    elif cmd == "dockerfile":
        cmd_dockerfile()
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
