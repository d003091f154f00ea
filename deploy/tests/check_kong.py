#!/usr/bin/env python3
"""Kong routes cover exactly the public operations of the six services.

    check_kong.py KONG_YML OPENAPI_DIR

OPENAPI_DIR holds <service>.json, each service's /openapi.json as served (so the
expectation comes from the code and stays exact when an API changes). Checks:
- every public operation (method + path of the OpenAPI documents, less the
  internal paths, plus the customer service's JWKS) is reached by one route of
  that service's Kong service, with the right upstream, and by no other route;
- every route (path regex x method) is such an operation: nothing else is routed;
- internal paths, /health/*, /metrics, /docs and /openapi.json reach no route;
- a route is open (no jwt) exactly when its operation asks for no security, and
  the catalog, registration, login, refresh and JWKS are open;
- login, registration and checkout carry a stricter Redis rate limit; the
  global plugins (rate limit with the Redis policy, size limit, correlation id,
  CORS, Prometheus) are there.
"""
import json
import re
import sys
from pathlib import Path

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in deploy/
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import services  # noqa: E402  (deploy/services.py)

SERVICES = services.ports()
INTERNAL = re.compile(r"^/api/(reservations|internal)(/|$)")
EXTRA = {("customer", "GET", "/.well-known/jwks.json"): False}  # served outside the OpenAPI
MUST_BE_OPEN = [("vendor", "GET", "/api/products"), ("vendor", "GET", "/api/products/{id}"),
                ("customer", "POST", "/api/customers"), ("customer", "POST", "/api/auth/login"),
                ("customer", "POST", "/api/auth/refresh"), ("customer", "GET", "/.well-known/jwks.json")]
STRICTER = [("POST", "/api/auth/login"), ("POST", "/api/customers"), ("POST", "/api/carts/{id}/checkout")]
NOT_ROUTED = ["/api/reservations", "/api/reservations/c1/p1", "/api/internal/orders/o1/payment-method",
              "/health/live", "/health/ready", "/metrics", "/docs", "/docs/", "/openapi.json",
              "/api/products/p1/secret", "/api/customers/me/x", "/"]

failures = []


def fail(msg):
    failures.append(msg)


def sample(path):
    """A concrete request path for a templated one."""
    return re.sub(r"\{[^}]+\}", "0193f0c2-6a1e-7c55-9d7e-1f2a3b4c5d6e", path)


def main(kong_yml, openapi_dir):
    conf = yaml.safe_load(Path(kong_yml).read_text())

    # What the code says is public: (service, METHOD, path) -> needs a token.
    expected = dict(EXTRA)
    for svc in SERVICES:
        doc = json.loads((Path(openapi_dir) / f"{svc}.json").read_text())
        for path, ops in doc["paths"].items():
            if INTERNAL.match(path):
                continue
            for method, op in ops.items():
                expected[(svc, method.upper(), path)] = bool(op.get("security") or doc.get("security"))

    # What Kong routes: (kong service, route, upstream service, regex, METHOD, jwt?).
    routes = []
    for ks in conf["services"]:
        m = re.fullmatch(r"http://([a-z]+):(\d+)", ks.get("url", ""))
        if not m or SERVICES.get(m.group(1)) != int(m.group(2)):
            fail(f"Kong service {ks['name']}: upstream {ks.get('url')} is not one of the six services")
            continue
        upstream = m.group(1)
        jwt = any(p["name"] == "jwt" for p in ks.get("plugins", []))
        for r in ks.get("routes", []):
            jwt_r = jwt or any(p["name"] == "jwt" for p in r.get("plugins", []))
            if r.get("strip_path", True):
                fail(f"route {r['name']}: strip_path must be false (the services serve the full path)")
            if r.get("hosts") or r.get("headers"):
                fail(f"route {r['name']}: hosts/headers matching is not expected")
            for p in r.get("paths", []):
                if not p.startswith("~") or not p.endswith("$"):
                    fail(f"route {r['name']}: path {p} must be an anchored regex (~...$); a plain path is a prefix")
                    continue
                for method in r.get("methods", []):
                    if method == "OPTIONS":
                        continue
                    routes.append(dict(ks=ks["name"], name=r["name"], upstream=upstream,
                                       regex=re.compile(p[1:]), pattern=p, prio=r.get("regex_priority", 0),
                                       method=method, jwt=jwt_r, plugins=r.get("plugins", [])))
                if "OPTIONS" not in r.get("methods", []):
                    fail(f"route {r['name']}: add OPTIONS so the cors plugin answers preflights")

    def winner(method, path):
        """The route Kong picks: regex routes matching at the start, highest priority."""
        hits = [r for r in routes if r["method"] == method and r["regex"].match(path)]
        if not hits:
            return None, hits
        top = max(h["prio"] for h in hits)
        best = [h for h in hits if h["prio"] == top]
        return (best[0] if len(best) == 1 else "ambiguous"), hits

    used = set()
    for (svc, method, path), secured in sorted(expected.items()):
        route, hits = winner(method, sample(path))
        if route is None:
            fail(f"{method} {path} ({svc}) is public but no Kong route reaches it")
            continue
        if route == "ambiguous":
            fail(f"{method} {path}: several routes of equal regex_priority match: {[h['name'] for h in hits]}")
            continue
        used.add(id(route))
        if route["upstream"] != svc:
            fail(f"{method} {path} belongs to {svc} but route {route['name']} sends it to {route['upstream']}")
        if route["jwt"] != secured:
            fail(f"{method} {path}: OpenAPI says {'a token is needed' if secured else 'open'}, "
                 f"but route {route['name']} {'checks' if route['jwt'] else 'does not check'} a JWT")
        # The route's own regex must be exactly this template (no wider).
        want = "~" + re.sub(r"\{[^}]+\}", "[^/]+", path).replace(".", r"\.") + "$"
        if route["pattern"] != want:
            fail(f"{method} {path}: route {route['name']} uses {route['pattern']}, expected {want}")

    for r in routes:
        if id(r) not in used:
            fail(f"route {r['name']} ({r['method']} {r['pattern']}) is no public operation of {r['upstream']}")

    for path in NOT_ROUTED:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            route, _ = winner(method, path)
            if route is not None:
                name = route if route == "ambiguous" else route["name"]
                fail(f"{method} {path} must not be routed, but {name} matches it")

    for key in MUST_BE_OPEN:
        if key not in expected:
            fail(f"{key[1]} {key[2]} ({key[0]}) is missing from the OpenAPI documents")
        elif expected[key]:
            fail(f"{key[1]} {key[2]} must be open but its OpenAPI operation requires a token")

    for method, path in STRICTER:
        route, _ = winner(method, sample(path))
        if not isinstance(route, dict):
            continue
        rl = [p for p in route["plugins"] if p["name"] == "rate-limiting"]
        if not rl or rl[0]["config"].get("policy") != "redis":
            fail(f"{method} {path}: route {route['name']} needs its own rate-limiting plugin with the redis policy")

    glob = {p["name"]: p.get("config", {}) for p in conf.get("plugins", [])}
    for name in ("rate-limiting", "request-size-limiting", "correlation-id", "cors", "prometheus"):
        if name not in glob:
            fail(f"global plugin {name} is missing")
    if glob.get("rate-limiting", {}).get("policy") != "redis":
        fail("the global rate limit must use the redis policy (limits hold across Kong replicas)")
    for ks in conf["services"]:
        for p in ks.get("plugins", []):
            if p["name"] == "jwt" and p.get("config", {}).get("uri_param_names", ["jwt"]):
                fail(f"{ks['name']}: the jwt plugin must not take tokens from the query string")

    secrets = [s for c in conf.get("consumers", []) for s in c.get("jwt_secrets", [])]
    if not secrets or any(s.get("algorithm") != "ES256" or "BEGIN PUBLIC KEY" not in s.get("rsa_public_key", "")
                          for s in secrets):
        fail("the consumer needs ES256 jwt_secrets with a PEM public key")

    open_routes = sorted({f"{r['method']} {r['pattern']}" for r in routes if not r["jwt"]})
    print(f"kong: {len(expected)} public operations, {len(routes)} route x method pairs; open: {', '.join(open_routes)}")
    if failures:
        print("\n".join("kong: FAIL: " + f for f in failures), file=sys.stderr)
        sys.exit(1)
    print("kong: routes cover exactly the public operations")


if __name__ == "__main__":
    main(*sys.argv[1:3])
