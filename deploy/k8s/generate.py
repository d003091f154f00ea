#!/usr/bin/env python3
"""Writes deploy/k8s/base/services/<service>.yaml: for each of the six services a
Deployment, a Service, a PodDisruptionBudget, a HorizontalPodAutoscaler and a
NetworkPolicy. One table below instead of six hand-kept copies; run it after a
change (scripts/test-deploy.sh fails when the files are stale):

    python3 deploy/k8s/generate.py
"""
import sys
from pathlib import Path

import yaml

# name: port, the services it calls, who calls it, extra egress.
SERVICES = {
    "customer": dict(port=5000, calls=[], external=[]),
    "order": dict(port=5001, calls=[], external=["https"]),            # payment provider
    "notification": dict(port=5002, calls=[], external=["https", "smtp"]),  # SMS provider, SMTP
    "inventory": dict(port=5003, calls=[], external=[]),
    # The product cache lives in each replica's memory (PRODUCT_LOCAL_CACHE_MB):
    # the memory request is sized so that the HPA's 80% target (154 Mi) sits above
    # a full cache plus the process, else the HPA would hold it at max replicas.
    "vendor": dict(port=5004, calls=[], external=[], env={"PRODUCT_LOCAL_CACHE_MB": "64"},
                   memory={"requests": "192Mi", "limits": "320Mi"}),
    "cart": dict(port=5005, calls=["vendor", "inventory", "order"], external=[]),
}
# Every service fetches the user keys from the customer service's JWKS.
for name, s in SERVICES.items():
    if name != "customer":
        s["calls"] = sorted(set(s["calls"]) | {"customer"})
CALLERS = {n: sorted(c for c, s in SERVICES.items() if n in s["calls"]) for n in SERVICES}
EXTERNAL_PORTS = {"https": [443], "smtp": [25, 465, 587]}
INFRA = [("postgres", 5432), ("redis", 6379), ("rabbitmq", 5672)]


def labels(name, component="service"):
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "marketplace",
            "app.kubernetes.io/component": component}


def sel(name):
    return {"matchLabels": {"app.kubernetes.io/name": name}}


def secret(key, optional=False):
    ref = {"name": "marketplace-secrets", "key": key}
    return {"valueFrom": {"secretKeyRef": {**ref, "optional": True} if optional else ref}}


def env_for(name):
    # Least privilege: the service's own PostgreSQL role mp_<name> (owner of its
    # schema, no right on any other), its own Redis user mp-<name> (its keys only,
    # deploy/redis/acl.json) and its own RabbitMQ user <name>.
    env = [
        {"name": "POSTGRES_PASSWORD", **secret(f"POSTGRES_{name.upper()}_PASSWORD")},
        {"name": "REDIS_PASSWORD", **secret(f"REDIS_{name.upper()}_PASSWORD")},
        {"name": "RABBITMQ_PASSWORD", **secret(f"RABBITMQ_{name.upper()}_PASSWORD")},
        # $(VAR) expands the variables above and the ConfigMap's.
        {"name": "DATABASE_URL", "value": f"postgres://mp_{name}:$(POSTGRES_PASSWORD)@$(POSTGRES_HOST)/$(POSTGRES_DB)$(POSTGRES_PARAMS)"},
        {"name": "REDIS_URL", "value": f"$(REDIS_SCHEME)://mp-{name}:$(REDIS_PASSWORD)@$(REDIS_HOST)"},
        {"name": "AMQP_URL", "value": f"$(AMQP_SCHEME)://{name}:$(RABBITMQ_PASSWORD)@$(AMQP_HOST)/%2f"},
        {"name": "SERVICE_KEY", "valueFrom": {"secretKeyRef": {"name": "marketplace-keys", "key": f"{name}.pem"}}},
        {"name": "TRUSTED_KEYS", "valueFrom": {"secretKeyRef": {"name": "marketplace-keys", "key": "trusted.jwks.json"}}},
    ]
    if name == "customer":
        env += [
            {"name": "JWT_SIGNING_KEY", "valueFrom": {"secretKeyRef": {"name": "marketplace-keys", "key": "user.pem"}}},
            {"name": "ADMIN_EMAIL", "valueFrom": {"secretKeyRef": {"name": "marketplace-secrets", "key": "ADMIN_EMAIL"}}},
            {"name": "ADMIN_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "marketplace-secrets", "key": "ADMIN_PASSWORD"}}},
        ]
    if name == "order":
        env.append({"name": "STRIPE_SECRET_KEY", "valueFrom": {"secretKeyRef": {"name": "marketplace-secrets", "key": "STRIPE_SECRET_KEY", "optional": True}}})
    if name == "notification":
        env.append({"name": "SMS_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "marketplace-secrets", "key": "SMS_AUTH_TOKEN", "optional": True}}})
    return env


def deployment(name, port, s):
    probe = lambda path, period, failures: {
        "httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
        "timeoutSeconds": 2, "failureThreshold": failures}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            # No replicas: the HorizontalPodAutoscaler owns the count (minReplicas
            # is the floor); a replicas field would reset it on every apply.
            "revisionHistoryLimit": 5,
            "selector": sel(name),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(name)},
                "spec": {
                    "serviceAccountName": "marketplace",
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": sel(name)}],
                    "containers": [{
                        "name": name,
                        "image": "marketplace",
                        "imagePullPolicy": "IfNotPresent",
                        "args": [name],
                        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                        "envFrom": [{"configMapRef": {"name": "marketplace-config"}}],
                        "env": env_for(name) + [{"name": k, "value": v} for k, v in s.get("env", {}).items()],
                        "startupProbe": probe("/health/live", 2, 30),
                        "readinessProbe": probe("/health/ready", 5, 3),
                        "livenessProbe": probe("/health/live", 10, 3),
                        "resources": {"requests": {"cpu": "50m", "memory": s.get("memory", {}).get("requests", "64Mi")},
                                      "limits": {"cpu": "1", "memory": s.get("memory", {}).get("limits", "256Mi")}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def services(name, port):
    # Prometheus finds the pods themselves (Kubernetes pod discovery,
    # deploy/prometheus/prometheus-k8s.yml): no headless Service for it.
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels(name)},
         "spec": {"selector": {"app.kubernetes.io/name": name},
                  "ports": [{"name": "http", "port": port, "targetPort": "http"}]}},
    ]


def pdb(name):
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "labels": labels(name)},
            "spec": {"minAvailable": 1, "selector": sel(name)}}


def hpa(name):
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": labels(name)},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 2, "maxReplicas": 6,
                     "metrics": [
                         {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                         {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}


def netpol(name, s):
    port = [{"protocol": "TCP", "port": s["port"]}]
    ingress = [
        {"from": [{"podSelector": sel("kong")}], "ports": port},
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": sel("prometheus")}], "ports": port},
    ]
    if CALLERS[name]:
        ingress.append({"from": [{"podSelector": sel(c)} for c in CALLERS[name]], "ports": port})
    egress = [
        # Its own infrastructure: in dev the StatefulSets, in prod the managed
        # endpoints (the prod overlay adds their address range).
        *({"to": [{"podSelector": sel(infra)}], "ports": [{"protocol": "TCP", "port": p}]} for infra, p in INFRA),
    ]
    for callee in s["calls"]:
        egress.append({"to": [{"podSelector": sel(callee)}],
                       "ports": [{"protocol": "TCP", "port": SERVICES[callee]["port"]}]})
    for ext in s["external"]:
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}],
                       "ports": [{"protocol": "TCP", "port": p} for p in EXTERNAL_PORTS[ext]]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": labels(name)},
            "spec": {"podSelector": sel(name), "policyTypes": ["Ingress", "Egress"],
                     "ingress": ingress, "egress": egress}}


def render(name):
    s = SERVICES[name]
    docs = [deployment(name, s["port"], s), *services(name, s["port"]), pdb(name), hpa(name), netpol(name, s)]
    head = (f"# Generated by deploy/k8s/generate.py: edit that, not this file.\n"
            f"# {name}: port {s['port']}; called by Kong"
            + (", " + ", ".join(CALLERS[name]) if CALLERS[name] else "")
            + "; calls " + (", ".join(s["calls"]) or "no service")
            + (", and outside: " + ", ".join(s["external"]) if s["external"] else "") + ".\n")
    return head + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, explicit_start=True)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "base" / "services")
    out.mkdir(parents=True, exist_ok=True)
    for name in SERVICES:
        (out / f"{name}.yaml").write_text(render(name))
