#!/usr/bin/env python3
"""Rules the Kubernetes schemas cannot check, on a rendered overlay.

    check_k8s.py RENDERED.yaml dev|prod
    check_k8s.py --sources deploy      (the kustomizations themselves, unrendered)
    check_k8s.py RENDERED-MONITORING.yaml monitoring RENDERED-DEV.yaml

- the six services and Kong: a Deployment with >= 2 replicas, readiness and
  liveness probes (the services' on /health/ready and /health/live), requests
  and limits, non-root read-only containers without privilege escalation, a
  PodDisruptionBudget, a HorizontalPodAutoscaler (min >= 2) and a NetworkPolicy;
- a default-deny NetworkPolicy; ingress to a service's port only from Kong,
  Prometheus and the services that call it; egress only to its infrastructure,
  the services it calls and (order, notification) the outside providers;
- the migrations Job, Kong's declarative config, the ConfigMap;
- no Secret holds a value committed in the repository (they are generated);
- dev: PostgreSQL, Redis and RabbitMQ are StatefulSets; prod: no ExternalName
  alias, the providers' own host names over verified TLS (sslmode=verify-full,
  amqps://, https://, rediss://), Kong's Redis from the same settings; Kong
  terminates TLS (certificate Secret kong-tls, routes HTTPS-only with 308),
  externalTrafficPolicy Local, trusted proxy ranges set and not wildcard;
- least privilege: every service's DATABASE_URL logs in as its own role
  mp_<service> with POSTGRES_<SERVICE>_PASSWORD, its REDIS_URL as its own Redis
  user mp-<service> with REDIS_<SERVICE>_PASSWORD; the migrations Job makes the
  roles and schemas first (deploy/postgres/service-roles.sql) and migrates each
  service as its own role; Kong gets its Redis user's password; dev: Redis
  starts with the ACL file its init container renders from deploy/redis/acl.json.
"""
import os
import sys
from pathlib import Path

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in deploy/
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import services  # noqa: E402  (deploy/services.py)

SERVICES = services.ports()
CALLS = {"cart": {"vendor", "inventory", "order", "customer"}}
for s in SERVICES:
    CALLS.setdefault(s, set() if s == "customer" else {"customer"})

failures = []


def fail(msg):
    failures.append(msg)


PROCESS_MIB = 64  # a service's own memory at load, besides the product cache (DESIGN: < 100 MB)


def mib(q):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for u, f in units.items():
        if q.endswith(u):
            return float(q[: -len(u)]) * f
    return float(q) / 2**20


CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local", ".cluster.local", ".local", ".internal")


def external_host(host, services):
    """A host name a provider's certificate can carry: a DNS name outside the
    cluster, not a Service of ours, not a bare name or an address."""
    import ipaddress
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        pass
    return "." in host and not host.endswith(CLUSTER_SUFFIXES) and host.split(".")[0] not in services


def managed_ok(cm, services):
    """prod: PostgreSQL, RabbitMQ (AMQP and management API) and Redis at the
    provider's host names, over TLS that verifies the certificate and its name."""
    from urllib.parse import urlsplit, parse_qs
    params = parse_qs(cm.get("POSTGRES_PARAMS", "").lstrip("?"))
    if params.get("sslmode") != ["verify-full"]:
        fail(f"prod: POSTGRES_PARAMS={cm.get('POSTGRES_PARAMS')!r}: needs sslmode=verify-full "
             "(require encrypts but accepts any certificate)")
    if cm.get("AMQP_SCHEME") != "amqps":
        fail(f"prod: AMQP_SCHEME={cm.get('AMQP_SCHEME')!r}: needs amqps")
    if cm.get("REDIS_SCHEME") != "rediss":
        fail(f"prod: REDIS_SCHEME={cm.get('REDIS_SCHEME')!r}: needs rediss")
    urls = {
        "POSTGRES_HOST": "postgres://" + cm.get("POSTGRES_HOST", ""),
        "AMQP_HOST": "amqps://" + cm.get("AMQP_HOST", ""),
        "RABBITMQ_API": cm.get("RABBITMQ_API", ""),
        "REDIS_HOST": "rediss://" + cm.get("REDIS_HOST", ""),
    }
    schemes = {"RABBITMQ_API": "https"}
    for key, url in urls.items():
        u = urlsplit(url)
        if key in schemes and u.scheme != schemes[key]:
            fail(f"prod: {key}={url!r}: needs {schemes[key]}://")
        if not u.hostname or not external_host(u.hostname, services):
            fail(f"prod: {key}={cm.get(key)!r}: needs the provider's host name (on its TLS certificate), "
                 "not a cluster name, alias or address")


def edge_ok(by, rendered_path):
    """prod: Kong terminates TLS with a certificate from a Secret, plain HTTP is
    redirected (308) to HTTPS, client addresses survive the load balancer, and
    only the operator's proxy ranges may set X-Forwarded-For."""
    import ipaddress
    dep = by.get("Deployment", {}).get("kong")
    if not dep:
        return
    pod = dep["spec"]["template"]["spec"]
    kong = next(c for c in pod["containers"] if c["name"] == "kong")
    env = {e["name"]: e.get("value", "") for e in kong.get("env", [])}
    listeners = [l.split() for l in env.get("KONG_PROXY_LISTEN", "").split(",") if l.strip()]
    tls = [l for l in listeners if "ssl" in l[1:]]
    if not tls:
        fail(f"prod: Kong must listen for HTTPS (KONG_PROXY_LISTEN={env.get('KONG_PROXY_LISTEN')!r} has no ssl listener)")
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in kong.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret_names = set(by.get("Secret", {}))
    for key in ("KONG_SSL_CERT", "KONG_SSL_CERT_KEY"):
        path = env.get(key, "")
        vol = volumes.get(mounts.get(path.rsplit("/", 1)[0]), {})
        name = vol.get("secret", {}).get("secretName", "")
        if not name:
            fail(f"prod: Kong's {key}={path!r} is not a file of a mounted Secret")
        elif not name.startswith("kong-tls"):
            fail(f"prod: Kong's {key} comes from Secret {name}, expected kong-tls")
        elif name not in secret_names and name != "kong-tls":
            fail(f"prod: Kong's certificate Secret {name} is not rendered")
    tls_ports = {int(l[0].rsplit(":", 1)[1]) for l in tls}
    cports = {p.get("name"): p["containerPort"] for p in kong.get("ports", [])}
    svc = by.get("Service", {}).get("kong", {}).get("spec", {})
    if svc.get("type") != "LoadBalancer":
        fail("prod: Service kong must be a LoadBalancer")
    if svc.get("externalTrafficPolicy") != "Local":
        fail("prod: Service kong needs externalTrafficPolicy: Local (Cluster hides client addresses behind node SNAT)")
    https = [p for p in svc.get("ports", []) if p["port"] == 443]
    if not https or cports.get(https[0].get("targetPort"), https[0].get("targetPort")) not in tls_ports:
        fail("prod: Service kong needs port 443 to Kong's TLS listener")
    pol = by.get("NetworkPolicy", {}).get("kong", {}).get("spec", {})
    admitted = {p["port"] for r in pol.get("ingress", []) for p in r.get("ports", [])}
    if not tls_ports <= admitted:
        fail(f"prod: NetworkPolicy kong does not admit Kong's TLS port(s) {sorted(tls_ports - admitted)}")
    # Client addresses: only the operator's proxies may set the header.
    trusted = [t.strip() for t in env.get("KONG_TRUSTED_IPS", "").split(",") if t.strip()]
    if not trusted or not env.get("KONG_REAL_IP_HEADER"):
        fail("prod: Kong needs KONG_TRUSTED_IPS (your load balancer's / cluster's ranges) and KONG_REAL_IP_HEADER")
    for t in trusted:
        try:
            net = ipaddress.ip_network(t, strict=False)
        except ValueError:
            fail(f"prod: KONG_TRUSTED_IPS entry {t!r} is no address range")
            continue
        if net.prefixlen < 8:
            fail(f"prod: KONG_TRUSTED_IPS trusts {t}: anyone there could forge X-Forwarded-For")
    # Routes: HTTPS only, plain HTTP answered with a 308 redirect.
    init = next((c for c in pod.get("initContainers", []) if c["name"] == "render-config"), {})
    ienv = {e["name"]: e.get("value", "") for e in init.get("env", [])}
    if ienv.get("KONG_HTTPS_REDIRECT") != "308":
        fail("prod: Kong's render step must make the routes HTTPS-only with a 308 redirect (KONG_HTTPS_REDIRECT=308)")
    # The cert-manager example: documented, valid, and not applied by default.
    prod_dir = Path(__file__).resolve().parents[1] / "k8s" / "overlays" / "prod"
    example = prod_dir / "optional" / "cert-manager-certificate.yaml"
    if not example.exists():
        fail(f"prod: no cert-manager example at {example}")
    else:
        cert = yaml.safe_load(example.read_text())
        if cert.get("kind") != "Certificate" or cert.get("spec", {}).get("secretName") != "kong-tls":
            fail(f"{example}: must be a cert-manager Certificate writing the Secret kong-tls")
        if "optional/cert-manager-certificate.yaml" in (yaml.safe_load((prod_dir / "kustomization.yaml").read_text())
                                                        .get("resources") or []):
            fail("prod: the cert-manager Certificate is optional; keep it out of the default resources")


URL = __import__("re").compile(r"^(?P<scheme>[^:]+)://(?P<user>[^:@/]+):(?P<pw>[^@]+)@(?P<rest>.+)$")


def least_privilege(by, env):
    import re
    root = Path(__file__).resolve().parents[1]

    def envs(c):
        return {e["name"]: e for e in c.get("env", [])}

    def secret_key(e):
        ref = (e or {}).get("valueFrom", {}).get("secretKeyRef", {})
        return ref.get("key") if ref.get("name", "").startswith("marketplace-secrets") else None

    def login(c, var, user, password_key, what):
        """env VAR of container c is a URL logging in as USER with $(X), X from the Secret's PASSWORD_KEY."""
        e = envs(c)
        m = URL.match(str(e.get(var, {}).get("value", "")))
        if not m or m["user"] != user:
            fail(f"{what}: {var} logs in as {m['user'] if m else None!r}, expected its own "
                 f"{'role' if 'DATABASE' in var else 'user'} {user}")
            return
        pw = re.fullmatch(r"\$\((\w+)\)", m["pw"])
        if not pw or secret_key(e.get(pw.group(1))) != password_key:
            fail(f"{what}: {var}: the password must be $(VAR) with VAR from marketplace-secrets' {password_key}")

    deps = by.get("Deployment", {})
    for s in SERVICES:
        dep = deps.get(s)
        if not dep:
            continue
        c = dep["spec"]["template"]["spec"]["containers"][0]
        login(c, "DATABASE_URL", f"mp_{s}", f"POSTGRES_{s.upper()}_PASSWORD", f"Deployment {s}")
        login(c, "REDIS_URL", f"mp-{s}", f"REDIS_{s.upper()}_PASSWORD", f"Deployment {s}")
    cm = next((d.get("data", {}) for n, d in by.get("ConfigMap", {}).items() if n.startswith("marketplace-config")), {})
    for key in ("DATABASE_URL", "REDIS_URL"):
        if key in cm:
            fail(f"marketplace-config holds {key}: one URL for every pod, without a user of its own; "
                 "each service builds its own from its credentials")
    # The migrations Job: roles and schemas first (as the administrator), then
    # each service's migrations as that service's role, then mp_grafana's grant.
    job = by.get("Job", {}).get("marketplace-migrate")
    if job:
        pod = job["spec"]["template"]["spec"]
        init = pod.get("initContainers", [])
        names = [c["name"] for c in init]
        roles = next((c for c in init if "service-roles.sql" in str(c.get("command", "")) + str(c.get("args", ""))), None)
        mig = next((c for c in init if c["name"] == "migrate"), None)
        if not roles:
            fail("Job marketplace-migrate: no init container runs deploy/postgres/service-roles.sql "
                 "(the roles mp_<service> and their schemas) before the migrations")
        elif mig and names.index(roles["name"]) > names.index("migrate"):
            fail("Job marketplace-migrate: the roles and schemas must be made before the migrations")
        if roles:
            missing = [f"POSTGRES_{s.upper()}_PASSWORD" for s in SERVICES
                       if secret_key(envs(roles).get(f"POSTGRES_{s.upper()}_PASSWORD")) != f"POSTGRES_{s.upper()}_PASSWORD"]
            if missing:
                fail(f"Job marketplace-migrate/{roles['name']}: gets no {', '.join(missing)}")
        if mig:
            for s in SERVICES:
                login(mig, f"{s.upper()}_DATABASE_URL", f"mp_{s}", f"POSTGRES_{s.upper()}_PASSWORD",
                      "Job marketplace-migrate/migrate")
            if "_DATABASE_URL" not in str(mig.get("args", "")) + str(mig.get("command", "")) or "DATABASE_URL" in envs(mig):
                fail("Job marketplace-migrate/migrate: run each `<service> migrate` with its <SERVICE>_DATABASE_URL "
                     "(no shared DATABASE_URL)")
    kong = deps.get("kong")
    if kong:
        c = next(c for c in kong["spec"]["template"]["spec"]["containers"] if c["name"] == "kong")
        if secret_key(envs(c).get("REDIS_KONG_PASSWORD")) != "REDIS_KONG_PASSWORD":
            fail("Deployment kong: no REDIS_KONG_PASSWORD from marketplace-secrets (its Redis user kong, "
                 "{vault://env/redis_kong_password} in kong.yml)")
    if env != "dev":
        return
    sts = by.get("StatefulSet", {}).get("redis")
    if not sts:
        return
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = [str(a) for a in c.get("command", []) + c.get("args", [])]
    aclfile = args[args.index("--aclfile") + 1] if "--aclfile" in args[:-1] else None
    if not aclfile:
        fail("dev: Redis must start with --aclfile (the users of deploy/redis/acl.json, default off)")
        return
    def mount_of(ctr, path):
        return next(((m["name"], path[len(m["mountPath"].rstrip("/")):]) for m in ctr.get("volumeMounts", [])
                     if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    render = next((i for i in pod.get("initContainers", []) if "redis_acl.py" in str(i.get("command", [])) + str(i.get("args", []))), None)
    if not render:
        fail("dev: Redis has no init container rendering its ACL file (deploy/redis/redis_acl.py acl-file)")
        return
    rargs = [str(a) for a in render.get("command", []) + render.get("args", [])]
    out = rargs[rargs.index("--out") + 1] if "--out" in rargs[:-1] else ""
    if not mount_of(render, out) or mount_of(render, out) != mount_of(c, aclfile):
        fail(f"dev: Redis's init container writes {out!r}, not the file Redis reads ({aclfile!r})")
    missing = [f"REDIS_{n.upper()}_PASSWORD" for n in list(SERVICES) + ["kong"]
               if secret_key(envs(render).get(f"REDIS_{n.upper()}_PASSWORD")) != f"REDIS_{n.upper()}_PASSWORD"]
    if missing:
        fail(f"dev: Redis's init container gets no {', '.join(missing)}")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    cms = by.get("ConfigMap", {})
    shipped = [cms.get(vols.get(m["name"], {}).get("configMap", {}).get("name"), {}).get("data", {})
               for m in render.get("volumeMounts", [])]
    acl = (root / "redis" / "acl.json")
    if not acl.exists() or not any(d.get("acl.json") == acl.read_text() for d in shipped):
        fail("dev: Redis's init container does not mount deploy/redis/acl.json as it is in the repository")


def main(path, env):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    hpa_targets = {h["spec"]["scaleTargetRef"]["name"]: h for h in by.get("HorizontalPodAutoscaler", {}).values()
                   if h["spec"]["scaleTargetRef"]["kind"] == "Deployment"}
    for target in hpa_targets:
        dep = by.get("Deployment", {}).get(target)
        if dep is None:
            fail(f"HorizontalPodAutoscaler {target}: no Deployment {target} to scale")
        elif "replicas" in dep["spec"]:
            # Every apply would reset the count the HPA chose (a scale-down under load);
            # the HPA's minReplicas is the floor instead.
            fail(f"Deployment {target}: the HPA scales it, so it must not set spec.replicas "
                 f"(found {dep['spec']['replicas']}); set the HPA's minReplicas instead")

    def workload_ok(name, dep, port=None):
        spec = dep["spec"]
        if name not in hpa_targets and spec.get("replicas", 1) < 2:
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
    # The vendor service keeps products in memory (PRODUCT_LOCAL_CACHE_MB,
    # default 64): the HPA's memory target must sit above a full cache plus the
    # process itself, or the HPA sees every replica "over target" and stays at max.
    vendor = deps.get("vendor")
    vhpa = hpa_targets.get("vendor")
    if vendor and vhpa:
        c = vendor["spec"]["template"]["spec"]["containers"][0]
        venv = {e["name"]: e.get("value") for e in c.get("env", [])}
        cache = int(venv.get("PRODUCT_LOCAL_CACHE_MB") or 64)
        req = mib(c["resources"]["requests"]["memory"])
        lim = mib(c["resources"]["limits"]["memory"])
        util = next((m["resource"]["target"]["averageUtilization"] for m in vhpa["spec"].get("metrics", [])
                     if m.get("resource", {}).get("name") == "memory"), None)
        if util is not None and req * util / 100 < cache + PROCESS_MIB:
            fail(f"vendor: the HPA's memory target is {req * util / 100:.0f} MiB ({util}% of {req} MiB requested), "
                 f"below a full product cache ({cache} MiB) plus the process ({PROCESS_MIB} MiB): it scales to max")
        if lim < cache + 2 * PROCESS_MIB:
            fail(f"vendor: memory limit {lim} MiB leaves no room above the {cache} MiB cache")
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
    want_secrets = {"marketplace-secrets", "marketplace-keys"} | ({"kong-tls"} if env == "prod" else set())
    if secrets != want_secrets:
        fail(f"Secrets {sorted(secrets)}: expected the generated {', '.join(sorted(want_secrets))}")

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
        # An alias (ExternalName postgres -> the provider's host) makes the client
        # verify the certificate against the alias, which is not on it: the
        # provider's host names go into the ConfigMap as they are.
        for n, svc in svcs.items():
            if svc.get("spec", {}).get("type") == "ExternalName":
                fail(f"prod: Service {n} is an ExternalName alias; put the provider's host name in marketplace-config")
        managed_ok(cm, set(svcs))
        edge_ok(by, path)
        # Kong's rate-limit Redis is the services' (marketplace-config's
        # REDIS_SCHEME and REDIS_HOST), through KONG_REDIS_URL.
        kong_init = deps.get("kong", {}).get("spec", {}).get("template", {}).get("spec", {}).get("initContainers", [{}])[0]
        kenv = {e["name"]: e for e in kong_init.get("env", [])}
        refs = {k: kenv.get(k, {}).get("valueFrom", {}).get("configMapKeyRef", {}) for k in ("REDIS_SCHEME", "REDIS_HOST")}
        if kenv.get("KONG_REDIS_URL", {}).get("value") != "$(REDIS_SCHEME)://$(REDIS_HOST)" or \
                any(not r.get("name", "").startswith("marketplace-config") or r.get("key") != k for k, r in refs.items()):
            fail("prod: Kong's rate-limit Redis must come from marketplace-config's REDIS_SCHEME and REDIS_HOST "
                 "(KONG_REDIS_URL=$(REDIS_SCHEME)://$(REDIS_HOST))")

    least_privilege(by, env)

    kinds = {k: len(v) for k, v in sorted(by.items())}
    print(f"k8s {env}: {sum(kinds.values())} objects: " + ", ".join(f"{v} {k}" for k, v in kinds.items()))
    if failures:
        print("\n".join(f"k8s {env}: FAIL: " + f for f in failures), file=sys.stderr)
        sys.exit(1)
    print(f"k8s {env}: deployments, probes, limits, security, PDBs, HPAs, network policies, jobs "
          "and each service's own credentials as required")


def check_monitoring(path, dev_path):
    """deploy/k8s/monitoring rendered: Prometheus in namespace monitoring with
    the repository's config and rules, Kubernetes service discovery limited to
    namespace marketplace with the RBAC for it, and (against the rendered dev
    overlay) NetworkPolicies that admit it on the ports it scrapes."""
    root = Path(__file__).resolve().parents[1]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    dev = [d for d in yaml.safe_load_all(open(dev_path)) if d]
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    for d in docs:
        ns = d["metadata"].get("namespace")
        if d["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            continue
        want = "marketplace" if d["kind"] in ("Role", "RoleBinding") else "monitoring"
        if ns != want:
            fail(f"{d['kind']} {d['metadata']['name']}: namespace {ns}, expected {want}")
    if "monitoring" not in by.get("Namespace", {}):
        fail("no Namespace monitoring")
    workloads = [d for k in ("StatefulSet", "Deployment") for d in by.get(k, {}).values()]
    prom = next((w for w in workloads if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
                 == "prometheus"), None)
    if not prom:
        fail("no Prometheus StatefulSet/Deployment with the pod label app.kubernetes.io/name: prometheus "
             "(the label the marketplace NetworkPolicies admit)")
        return report("monitoring", by)
    pod = prom["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sa = pod.get("serviceAccountName")
    if sa not in by.get("ServiceAccount", {}) or pod.get("automountServiceAccountToken") is False:
        fail("Prometheus needs its ServiceAccount (with its token mounted) for Kubernetes service discovery")
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) or not sc.get("readOnlyRootFilesystem") \
            or sc.get("allowPrivilegeEscalation") is not False or "ALL" not in sc.get("capabilities", {}).get("drop", []):
        fail("Prometheus: non-root, read-only root filesystem, no privilege escalation, capabilities dropped")
    if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
        fail("Prometheus: needs requests and limits")
    if "readinessProbe" not in c or "livenessProbe" not in c:
        fail("Prometheus: needs readiness and liveness probes")
    # Config and rules: the repository's files, where the config looks for them.
    cms = {n: d for n, d in by.get("ConfigMap", {}).items()}
    conf_cm = next((d for d in cms.values() if "prometheus.yml" in d.get("data", {})), None)
    if not conf_cm or conf_cm["data"]["prometheus.yml"] != (root / "prometheus" / "prometheus-k8s.yml").read_text():
        fail("the Prometheus config ConfigMap is not deploy/prometheus/prometheus-k8s.yml")
        return report("monitoring", by)
    conf = yaml.safe_load(conf_cm["data"]["prometheus.yml"])
    rules = {f.name: f.read_text() for f in (root / "prometheus" / "rules").glob("*.yml")}
    rules_cm = next((d for d in cms.values() if set(rules) & set(d.get("data", {}))), {"data": {}})
    for name, text in rules.items():
        if rules_cm["data"].get(name) != text:
            fail(f"rules/{name} is not in the rules ConfigMap as it is in the repository (list it in "
                 "deploy/prometheus/kustomization.yaml)")
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    by_cm = {v.get("configMap", {}).get("name"): mounts.get(n, {}) for n, v in vols.items()}
    conf_file = next((a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--config.file=")), "")
    conf_mount = by_cm.get(conf_cm["metadata"]["name"], {})
    if conf_mount.get("mountPath") != conf_file or conf_mount.get("subPath") != "prometheus.yml":
        fail(f"--config.file={conf_file} is not the mounted prometheus.yml")
    conf_dir = conf_file.rsplit("/", 1)[0]
    for pattern in conf.get("rule_files", []):
        want = pattern if pattern.startswith("/") else f"{conf_dir}/{pattern}"
        if by_cm.get(rules_cm["metadata"]["name"] if "metadata" in rules_cm else None, {}).get("mountPath") \
                != want.rsplit("/", 1)[0]:
            fail(f"rule_files {pattern}: the rules ConfigMap is not mounted at {want.rsplit('/', 1)[0]}")
    # Discovery: namespace marketplace only, with a Role there to list pods.
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    for name in ("marketplace", "kong"):
        if name not in jobs:
            fail(f"prometheus-k8s.yml: no scrape job {name}")
    for j in jobs.values():
        for sd in j.get("kubernetes_sd_configs", []):
            # Debian's promtool cannot parse these blocks: their fields are checked here.
            extra = set(sd) - {"role", "namespaces", "selectors", "attach_metadata"}
            if extra:
                fail(f"job {j['job_name']}: unknown kubernetes_sd_configs fields {sorted(extra)}")
            if sd.get("role") != "pod" or sd.get("namespaces", {}).get("names") != ["marketplace"] \
                    or set(sd.get("namespaces", {})) - {"names", "own_namespace"}:
                fail(f"job {j['job_name']}: kubernetes_sd_configs must be role pod in namespace marketplace only")
            for sel in sd.get("selectors", []):
                if set(sel) - {"role", "label", "field"} or sel.get("role") != sd.get("role"):
                    fail(f"job {j['job_name']}: bad selector {sel}")
        metas = {m for rc in j.get("relabel_configs", []) for m in rc.get("source_labels", [])}
        if j.get("kubernetes_sd_configs") and "__meta_kubernetes_pod_container_port_name" not in metas:
            fail(f"job {j['job_name']}: keep one container port (relabel on __meta_kubernetes_pod_container_port_name)")
        if j.get("static_configs") or j.get("dns_sd_configs"):
            for t in [t for sc_ in j.get("static_configs", []) for t in sc_["targets"]] + \
                     [n for d in j.get("dns_sd_configs", []) for n in d["names"]]:
                if not t.split(":")[0].endswith(".svc.cluster.local"):
                    fail(f"job {j['job_name']}: target {t} does not resolve from namespace monitoring")
    role = next((r for r in by.get("Role", {}).values() if r["metadata"].get("namespace") == "marketplace"), None)
    grants = {(res, verb) for rule in (role or {}).get("rules", []) for res in rule.get("resources", [])
              for verb in rule.get("verbs", [])}
    if not {("pods", "get"), ("pods", "list"), ("pods", "watch")} <= grants:
        fail("no Role in marketplace letting Prometheus get, list and watch pods")
    if any(v not in ("get", "list", "watch") for _, v in grants):
        fail("the discovery Role grants more than get/list/watch")
    bound = any(b["roleRef"]["name"] == (role or {}).get("metadata", {}).get("name") and
                {"kind": "ServiceAccount", "name": sa, "namespace": "monitoring"} in b.get("subjects", [])
                for b in by.get("RoleBinding", {}).values())
    if not bound:
        fail(f"no RoleBinding in marketplace giving the Role to ServiceAccount monitoring/{sa}")
    # The marketplace side admits this Prometheus on the ports it scrapes.
    plabels = prom["spec"]["template"]["metadata"]["labels"]
    dev_by = {}
    for d in dev:
        dev_by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    def admits(pol, port):
        for rule in pol["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            for peer in rule.get("from", []):
                nsl = peer.get("namespaceSelector", {}).get("matchLabels", {})
                pl = peer.get("podSelector", {}).get("matchLabels", {})
                if nsl.get("kubernetes.io/metadata.name") == "monitoring" and pl.items() <= plabels.items() \
                        and port in ports:
                    return True
        return False
    scraped = {**{s: ("http", p) for s, p in SERVICES.items()}, "kong": ("status", 8100)}
    for name, (port_name, port) in scraped.items():
        pol = dev_by.get("NetworkPolicy", {}).get(name)
        if not pol or not admits(pol, port):
            fail(f"NetworkPolicy {name} does not admit monitoring/prometheus on {port} ({port_name})")
        dep = dev_by.get("Deployment", {}).get(name, {})
        names = {p.get("name") for ctr in dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
                 for p in ctr.get("ports", [])}
        if port_name not in names:
            fail(f"Deployment {name} has no container port named {port_name}, which the scrape keeps")
    return report("monitoring", by)


def report(env, by):
    kinds = {k: len(v) for k, v in sorted(by.items())}
    print(f"k8s {env}: {sum(kinds.values())} objects: " + ", ".join(f"{v} {k}" for k, v in kinds.items()))
    if failures:
        print("\n".join(f"k8s {env}: FAIL: " + f for f in failures), file=sys.stderr)
        sys.exit(1)
    print(f"k8s {env}: Prometheus, its config, rules, discovery RBAC and the policies that admit it as required")


def kustomize_file_refs(kfile):
    """The files (not directories) a kustomization.yaml reads: generator sources,
    patches, and resources that are files."""
    k = yaml.safe_load(kfile.read_text()) or {}
    refs = []
    for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
        refs += [f.split("=", 1)[-1] for f in gen.get("files", [])]
        refs += list(gen.get("envs", [])) + ([gen["env"]] if gen.get("env") else [])
    refs += [p["path"] for p in k.get("patches", []) if isinstance(p, dict) and p.get("path")]
    refs += [p for p in k.get("patchesStrategicMerge", []) if isinstance(p, str) and "\n" not in p]
    for r in k.get("resources", []) + k.get("components", []):
        target = kfile.parent / r
        if not target.is_dir():
            refs.append(r)
    return refs


def check_sources(root):
    """Every kustomization under ROOT renders with kustomize's default load
    restrictor (LoadRestrictionsRootOnly, what `kubectl apply -k`, Argo CD and Flux
    use): it reads no file outside its own directory. Other kustomizations may be
    referenced as directories (that is how a base shares files)."""
    kfiles = sorted(Path(root).rglob("kustomization.yaml"))
    for kfile in kfiles:
        base = kfile.parent.resolve()
        for ref in kustomize_file_refs(kfile):
            target = (kfile.parent / ref).resolve()
            if os.path.commonpath([base, target]) != str(base):
                fail(f"{kfile}: reads {ref}, outside its kustomization root: kustomize refuses it without "
                     f"--load-restrictor (make the file's directory a kustomization and include it)")
    flag = "LoadRestrictions" + "None"
    for path in [*Path(root).rglob("*"), Path("docker-compose.yml"), *Path("scripts").glob("*.sh")]:
        if path.is_file() and path.resolve() != Path(__file__).resolve() and flag in path.read_text(errors="replace"):
            fail(f"{path}: still mentions {flag}; the overlays render and apply without it")
    print(f"k8s sources: {len(kfiles)} kustomizations read files inside their own roots only")
    if failures:
        print("\n".join("k8s sources: FAIL: " + f for f in failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "--sources":
        check_sources(sys.argv[2])
    elif sys.argv[2] == "monitoring":
        check_monitoring(sys.argv[1], sys.argv[3])
    else:
        main(sys.argv[1], sys.argv[2])
