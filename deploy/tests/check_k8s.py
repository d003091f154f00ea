#!/usr/bin/env python3
"""Rules the Kubernetes schemas cannot check, on a rendered overlay.

    check_k8s.py RENDERED.yaml dev|prod

- the six services and Kong: a Deployment with >= 2 replicas, readiness and
  liveness probes (the services' on /health/ready and /health/live), requests
  and limits, non-root read-only containers without privilege escalation, a
  PodDisruptionBudget, a HorizontalPodAutoscaler (min >= 2) and a NetworkPolicy;
- a default-deny NetworkPolicy; ingress to a service's port only from Kong,
  Prometheus and the services that call it; egress only to its infrastructure,
  the services it calls and (order, notification) the outside providers;
- the migrations Job, Kong's declarative config, the ConfigMap;
- no Secret holds a value committed in the repository (they are generated);
- dev: PostgreSQL, Redis and RabbitMQ are StatefulSets; prod: ExternalName
  services and TLS URLs.
"""
import sys

import yaml

SERVICES = {"customer": 5000, "order": 5001, "notification": 5002, "inventory": 5003, "vendor": 5004, "cart": 5005}
CALLS = {"cart": {"vendor", "inventory", "order", "customer"}}
for s in SERVICES:
    CALLS.setdefault(s, set() if s == "customer" else {"customer"})

failures = []


def fail(msg):
    failures.append(msg)


def main(path, env):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    def workload_ok(name, dep, port=None):
        spec = dep["spec"]
        if spec.get("replicas", 1) < 2:
            fail(f"Deployment {name}: fewer than 2 replicas")
        pod = spec["template"]["spec"]
        psc = pod.get("securityContext", {})
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                fail(f"{name}/{c['name']}: not runAsNonRoot")
            if not sc.get("readOnlyRootFilesystem"):
                fail(f"{name}/{c['name']}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{name}/{c['name']}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                fail(f"{name}/{c['name']}: capabilities not dropped")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                fail(f"{name}/{c['name']}: needs requests and limits")
        main_c = pod["containers"][0]
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in main_c:
                fail(f"{name}: no {probe}")
        if port:
            if main_c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
                fail(f"{name}: readiness must probe /health/ready")
            if main_c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health/live":
                fail(f"{name}: liveness must probe /health/live")
            if main_c["ports"][0]["containerPort"] != port:
                fail(f"{name}: container port {main_c['ports'][0]['containerPort']}, expected {port}")
        for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"):
            if name not in by.get(kind, {}):
                fail(f"{name}: no {kind}")
        hpa = by.get("HorizontalPodAutoscaler", {}).get(name)
        if hpa and hpa["spec"]["minReplicas"] < 2:
            fail(f"{name}: HPA minReplicas < 2")

    deps = by.get("Deployment", {})
    for name, port in SERVICES.items():
        if name not in deps:
            fail(f"no Deployment {name}")
            continue
        workload_ok(name, deps[name], port)
    if "kong" not in deps:
        fail("no Deployment kong")
    else:
        workload_ok("kong", deps["kong"])

    np = by.get("NetworkPolicy", {})
    dd = np.get("default-deny")
    if not dd or dd["spec"]["podSelector"] != {} or set(dd["spec"]["policyTypes"]) != {"Ingress", "Egress"}:
        fail("no default-deny NetworkPolicy for ingress and egress")
    label = lambda peer: peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
    for name, port in SERVICES.items():
        pol = np.get(name)
        if not pol:
            continue
        sources = set()
        for rule in pol["spec"].get("ingress", []):
            if not rule.get("from"):
                fail(f"NetworkPolicy {name}: an ingress rule without 'from' admits everyone")
            for peer in rule.get("from", []):
                sources.add(label(peer))
        callers = {c for c, callees in CALLS.items() if name in callees}
        if sources != {"kong", "prometheus"} | callers:
            fail(f"NetworkPolicy {name}: ingress from {sorted(map(str, sources))}, expected kong, prometheus and {sorted(callers)}")
        targets = set()
        for rule in pol["spec"].get("egress", []):
            for peer in rule.get("to", []):
                targets.add(label(peer) or ("outside" if "ipBlock" in peer else None))
        want = {"postgres", "redis", "rabbitmq"} | CALLS[name] | ({"outside"} if name in ("order", "notification") else set())
        if targets != want:
            fail(f"NetworkPolicy {name}: egress to {sorted(map(str, targets))}, expected {sorted(want)}")

    jobs = by.get("Job", {})
    if "marketplace-migrate" not in jobs:
        fail("no migrations Job")
    if not any(n.startswith("kong-declarative") and "kong.yml" in d.get("data", {}) for n, d in by.get("ConfigMap", {}).items()):
        fail("Kong's declarative config is not in a ConfigMap")
    if not any(n.startswith("marketplace-config") for n in by.get("ConfigMap", {})):
        fail("no marketplace-config ConfigMap")
    secrets = {n.rsplit("-", 1)[0] for n in by.get("Secret", {})}
    if secrets != {"marketplace-secrets", "marketplace-keys"}:
        fail(f"Secrets {sorted(secrets)}: expected the generated marketplace-secrets and marketplace-keys")

    sts = by.get("StatefulSet", {})
    svcs = by.get("Service", {})
    cm = next((d["data"] for n, d in by.get("ConfigMap", {}).items() if n.startswith("marketplace-config")), {})
    if env == "dev":
        for infra in ("postgres", "redis", "rabbitmq"):
            if infra not in sts:
                fail(f"dev: {infra} is not a StatefulSet")
    else:
        if sts:
            fail(f"prod: StatefulSets {sorted(sts)}; infrastructure must be external")
        for infra in ("postgres", "redis", "rabbitmq"):
            if svcs.get(infra, {}).get("spec", {}).get("type") != "ExternalName":
                fail(f"prod: Service {infra} is not an ExternalName")
        if "sslmode=require" not in cm.get("POSTGRES_PARAMS", "") or not cm.get("REDIS_URL", "").startswith("rediss://") \
                or cm.get("AMQP_SCHEME") != "amqps":
            fail("prod: PostgreSQL, Redis and RabbitMQ must be reached over TLS")

    kinds = {k: len(v) for k, v in sorted(by.items())}
    print(f"k8s {env}: {sum(kinds.values())} objects: " + ", ".join(f"{v} {k}" for k, v in kinds.items()))
    if failures:
        print("\n".join(f"k8s {env}: FAIL: " + f for f in failures), file=sys.stderr)
        sys.exit(1)
    print(f"k8s {env}: deployments, probes, limits, security, PDBs, HPAs, network policies and jobs as required")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
