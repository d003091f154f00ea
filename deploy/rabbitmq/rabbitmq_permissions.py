#!/usr/bin/env python3
"""Per-service RabbitMQ users: render, check and apply permissions.json.

    rabbitmq_permissions.py render BIN_DIR > permissions.json
        from each service's `<service> rabbitmq-user --user <service>` (the
        catalog is the source of truth; see docs/messaging.md)
    rabbitmq_permissions.py check BIN_DIR permissions.json
        fails when the file is stale
    rabbitmq_permissions.py apply permissions.json
        creates or updates the users through the management API. Env:
        RABBITMQ_API (default http://rabbitmq:15672), RABBITMQ_ADMIN_USER,
        RABBITMQ_ADMIN_PASSWORD, RABBITMQ_<SERVICE>_PASSWORD for each service.
        Waits up to RABBITMQ_WAIT seconds (default 120) for the API. Used by the
        docker-compose step rabbitmq-users and the Kubernetes Job of that name.
"""
import base64
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

def service_names():
    """From deploy/services.txt (render and check run in the repository; apply, in a
    container, needs no list: it applies the users permissions.json holds)."""
    sys.dont_write_bytecode = True  # no __pycache__ in deploy/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import services
    return services.names()


def render(bin_dir):
    users = {}
    for svc in service_names():
        out = subprocess.run([os.path.join(bin_dir, svc), "rabbitmq-user", "--user", svc],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "AMQP_PREFIX": "marketplace"}).stdout
        user = {"vhost": "/"}
        for line in out.splitlines():
            w = shlex.split(line)
            if w[:2] == ["rabbitmqctl", "set_permissions"]:
                user["configure"], user["write"], user["read"] = w[-3:]
            elif w[:2] == ["rabbitmqctl", "set_topic_permissions"]:
                user["topic"] = {"exchange": w[-3], "write": w[-2], "read": w[-1]}
        if "configure" not in user or "topic" not in user:
            sys.exit(f"{svc} rabbitmq-user printed no permissions:\n{out}")
        users[svc] = user
    return {"comment": "Generated from `<service> rabbitmq-user`; refresh with "
                       "deploy/rabbitmq/rabbitmq_permissions.py render BIN_DIR", "users": users}


def apply(path):
    doc = json.load(open(path))
    api = os.environ.get("RABBITMQ_API", "http://rabbitmq:15672").rstrip("/")
    admin = os.environ.get("RABBITMQ_ADMIN_USER", "admin")
    auth = base64.b64encode(f"{admin}:{os.environ['RABBITMQ_ADMIN_PASSWORD']}".encode()).decode()

    def call(method, url, body=None):
        req = urllib.request.Request(api + url, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Basic {auth}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    deadline = time.monotonic() + float(os.environ.get("RABBITMQ_WAIT", "120"))
    while True:
        try:
            call("GET", "/api/overview")
            break
        except (urllib.error.URLError, OSError) as e:
            if time.monotonic() > deadline:
                sys.exit(f"rabbitmq-users: management API at {api} not reachable: {e}")
            time.sleep(2)

    q = lambda s: urllib.parse.quote(s, safe="")
    for svc, u in doc["users"].items():
        password = os.environ.get(f"RABBITMQ_{svc.upper()}_PASSWORD")
        if not password:
            sys.exit(f"rabbitmq-users: RABBITMQ_{svc.upper()}_PASSWORD is not set")
        call("PUT", f"/api/users/{q(svc)}", {"password": password, "tags": ""})
        call("PUT", f"/api/permissions/{q(u['vhost'])}/{q(svc)}",
             {"configure": u["configure"], "write": u["write"], "read": u["read"]})
        call("PUT", f"/api/topic-permissions/{q(u['vhost'])}/{q(svc)}", u["topic"])
        print(f"rabbitmq-users: {svc}: user and permissions set")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "render":
        print(json.dumps(render(sys.argv[2]), indent=2))
    elif cmd == "check":
        want, have = render(sys.argv[2]), json.load(open(sys.argv[3]))
        if want["users"] != have["users"]:
            sys.exit(f"{sys.argv[3]} is stale: run `rabbitmq_permissions.py render {sys.argv[2]} > {sys.argv[3]}`")
        print(f"rabbitmq: {sys.argv[3]} matches the services' rabbitmq-user output")
    elif cmd == "apply":
        apply(sys.argv[2])
    else:
        sys.exit(__doc__)
