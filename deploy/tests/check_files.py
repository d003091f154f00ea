#!/usr/bin/env python3
"""Deploy files that must agree with each other (offline).

    check_files.py COMPOSE.yml RENDERED-K8S.yaml...

COMPOSE.yml is `docker-compose config` output (with the logging profile), the
others rendered kustomizations.
- Grafana provisioning: only ${VAR} / $VAR references (Grafana expands no
  ${VAR:-default}), each set on compose's grafana service; the PostgreSQL data
  source logs in as the read-only role mp_grafana with GRAFANA_DB_PASSWORD.
- mp_grafana (deploy/postgres/grafana-role.sql): SELECT on exactly the tables
  the dashboards' SQL reads, no other privilege; created after the migrations
  in compose (a step Grafana waits for) and in the Kubernetes migration Job.
- Fluent Bit: its position database on a volume (not /tmp, which a restart
  loses, so every log would be shipped again), and only the six services' lines.
- images: python pinned to a 3.12 patch release, RabbitMQ on the 4.x series,
  no image without a tag or on :latest (our own `marketplace` aside).
- least privilege (compose): every service's DATABASE_URL logs in as its own
  role mp_<service> (never the administrator POSTGRES_USER) and its REDIS_URL as
  its own Redis user mp-<service>; the roles and schemas are made by an admin
  step (deploy/postgres/service-roles.sql) before `migrate`, which migrates each
  service as its own role; mp_grafana's grant runs as the administrator; Redis
  starts with the ACL file rendered from deploy/redis/acl.json, which disables
  the `default` user; Kong gets its Redis user's password.
"""
import configparser
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.dont_write_bytecode = True  # no __pycache__ in deploy/
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import services  # noqa: E402  (deploy/services.py)

SERVICES = services.names()
failures = []


def fail(msg):
    failures.append(msg)


def grafana(compose):
    env = compose["services"]["grafana"].get("environment", {})
    def strings(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)
        elif isinstance(node, str):
            yield node
    for f in sorted((ROOT / "deploy/grafana/provisioning").rglob("*.yml")):
        text = "\n".join(strings(yaml.safe_load(f.read_text())))  # values only, not comments
        for m in re.finditer(r"\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", text):
            inner = m.group(1) if m.group(1) is not None else m.group(2)
            if inner.startswith("__"):
                continue  # $__env{...}, $__file{...}
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", inner):
                fail(f"{f.relative_to(ROOT)}: {m.group(0)}: Grafana expands only $VAR and ${{VAR}} "
                     "(no :- default, no :? check); the value stays literally as written")
            elif inner not in env:
                fail(f"{f.relative_to(ROOT)}: {m.group(0)} is not set on compose's grafana service")
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/marketplace.yml").read_text())
    pg = [d for d in ds["datasources"] if "postgres" in d["type"]]
    for d in pg:
        if d.get("user") != "mp_grafana":
            fail(f"Grafana data source {d['name']}: user {d.get('user')!r}, expected the read-only role mp_grafana")
        if d.get("secureJsonData", {}).get("password") not in ("${GRAFANA_DB_PASSWORD}", "$GRAFANA_DB_PASSWORD"):
            fail(f"Grafana data source {d['name']}: the password must be ${{GRAFANA_DB_PASSWORD}}")
    if not pg:
        fail("no PostgreSQL data source in Grafana's provisioning")


def grafana_role(compose, rendered):
    sql_file = ROOT / "deploy/postgres/grafana-role.sql"
    if not sql_file.exists():
        fail("no deploy/postgres/grafana-role.sql (the read-only role mp_grafana)")
        return
    sql = re.sub(r"--[^\n]*", "", sql_file.read_text())
    read = set()
    for f in (ROOT / "deploy/grafana/dashboards").glob("*.json"):
        for panel in json.loads(f.read_text()).get("panels", []):
            for t in panel.get("targets", []):
                for m in re.finditer(r"(?i)\b(?:from|join)\s+([a-z_]+\.[a-z_]+)", t.get("rawSql", "")):
                    read.add(m.group(1).lower())
    granted = set()
    statements = [" ".join(st.split()) for st in sql.split(";")]
    for st in statements:
        m = re.fullmatch(r"(?is).*?\bgrant\s+(.+?)\s+on\s+(?:table\s+)?(.+?)\s+to\s+mp_grafana\b.*", st)
        if not m or re.match(r"(?i)(schema|database)\s", m.group(2)):
            continue  # USAGE on the schema, CONNECT on the database
        privs = {p.strip().lower() for p in m.group(1).split(",")}
        if privs != {"select"}:
            fail(f"grafana-role.sql grants {sorted(privs)} to mp_grafana: SELECT only")
        granted |= {t.strip().lower() for t in m.group(2).split(",")}
    if granted != read:
        fail(f"mp_grafana may SELECT {sorted(granted)}, the dashboards read {sorted(read)}: grant exactly those")
    if re.search(r"(?is)grant\s+all|\b(superuser|createrole|createdb|bypassrls)\b", sql.replace("NOSUPERUSER", "")
                 .replace("NOCREATEROLE", "").replace("NOCREATEDB", "").replace("NOBYPASSRLS", "")):
        fail("grafana-role.sql gives mp_grafana more than reading")
    # compose: a step after the migrations, which Grafana waits for.
    svcs = compose["services"]
    step = next((n for n, s in svcs.items() if "grafana-role.sql" in json.dumps(s)), None)
    if not step:
        fail("compose: no step runs deploy/postgres/grafana-role.sql")
    else:
        deps = svcs[step].get("depends_on", {})
        if deps.get("migrate", {}).get("condition") != "service_completed_successfully":
            fail(f"compose: {step} must run after migrate has completed (the tables must exist)")
        if svcs["grafana"].get("depends_on", {}).get(step, {}).get("condition") != "service_completed_successfully":
            fail(f"compose: grafana must wait for {step}")
        if "GRAFANA_DB_PASSWORD" not in json.dumps(svcs[step].get("environment", {})):
            fail(f"compose: {step} gets no GRAFANA_DB_PASSWORD")
    # Kubernetes: the migration Job runs it after the migrations.
    for path in rendered:
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        job = next((d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "marketplace-migrate"), None)
        if not job:
            continue
        pod = job["spec"]["template"]["spec"]
        init = [c["name"] for c in pod.get("initContainers", [])]
        runs = [c for c in pod["containers"] if "grafana-role.sql" in json.dumps(c)]
        if "migrate" not in init or not runs:
            fail(f"{Path(path).name}: the Job marketplace-migrate must create mp_grafana after the migrations "
                 "(migrate as an init container, then the role)")
        elif not any(e["name"] == "GRAFANA_DB_PASSWORD" for e in runs[0].get("env", [])):
            fail(f"{Path(path).name}: the mp_grafana step gets no GRAFANA_DB_PASSWORD")


def fluent_bit(compose):
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=(" ",))
    cp.optionxform = str
    text = (ROOT / "deploy/logging/fluent-bit.conf").read_text()
    sections = []
    for block in re.split(r"(?m)^\[", text)[1:]:
        head, _, body = block.partition("\n")
        kv = {}
        for line in body.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition(" ")
                kv.setdefault(k, []).append(v.strip())
        sections.append((head.strip("] \t"), kv))
    tail = next((kv for h, kv in sections if h == "INPUT" and kv.get("Name") == ["tail"]), {})
    db = (tail.get("DB") or [""])[0]
    fb = compose["services"].get("fluent-bit", {})
    volumes = []
    for v in fb.get("volumes", []):
        if isinstance(v, str):  # docker-compose v1 prints SOURCE:TARGET[:MODE]
            src, tgt = (v.split(":") + [""])[:2]
            v = {"type": "bind" if src.startswith(("/", ".")) else "volume", "source": src, "target": tgt}
        volumes.append(v)
    on_volume = any(v.get("type") == "volume" and db.startswith(v.get("target", "").rstrip("/") + "/") for v in volumes)
    if not db or db.startswith("/tmp/") or not on_volume:
        fail(f"Fluent Bit: DB {db!r} must be on a named volume mounted in the fluent-bit service "
             "(in /tmp every restart ships every log again)")
    greps = [kv for h, kv in sections if h == "FILTER" and kv.get("Name") == ["grep"]]
    want = set(SERVICES)
    ok = False
    for g in greps:
        for rule in g.get("Regex", []):
            key, _, rx = rule.partition(" ")
            if "com.docker.compose.service" in key or "compose_service" in key:
                rx = rx.strip()
                names = {n for n in re.findall(r"[a-z]+", rx)}
                if rx.startswith("^") and rx.endswith("$") and names == want:
                    ok = True
    if not ok:
        fail("Fluent Bit: no grep filter keeping only the six services' lines "
             f"(Regex on the compose service name, ^({'|'.join(SERVICES)})$)")


def images(compose, rendered):
    found = [(f"compose {n}", s["image"]) for n, s in compose["services"].items() if s.get("image")]
    for path in rendered:
        for d in yaml.safe_load_all(open(path)):
            if not d or d["kind"] not in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
                continue
            pod = d["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                found.append((f"{Path(path).name} {d['kind']}/{d['metadata']['name']}/{c['name']}", c["image"]))
    for where, image in found:
        name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        base = name.split("/")[-1]
        if base == "marketplace" or image.startswith("${MP_IMAGE"):
            continue
        if not tag or tag == "latest":
            fail(f"{where}: image {image} has no pinned tag")
        if base == "python" and not re.fullmatch(r"3\.12\.\d+-slim(-[a-z]+)?", tag):
            fail(f"{where}: {image}: pin python to a 3.12 patch release (e.g. 3.12.11-slim-bookworm)")
        if base == "rabbitmq" and not re.fullmatch(r"4\.\d+(\.\d+)?(-management)?(-alpine)?", tag):
            fail(f"{where}: {image}: RabbitMQ must be on a supported 4.x series")
    return len(found)


def url(value):
    from urllib.parse import urlsplit
    return urlsplit(str(value or ""))


def least_privilege(compose):
    svcs = compose["services"]
    admin = svcs.get("postgres", {}).get("environment", {}).get("POSTGRES_USER", "postgres")
    for s in SERVICES:
        env = svcs.get(s, {}).get("environment", {})
        db, redis = url(env.get("DATABASE_URL")), url(env.get("REDIS_URL"))
        if db.username != f"mp_{s}" or not db.password:
            fail(f"compose: {s}: DATABASE_URL logs in as {db.username!r}, expected its own role mp_{s} "
                 f"with its password (not the administrator {admin!r} or a shared role)")
        if redis.username != f"mp-{s}" or not redis.password:
            fail(f"compose: {s}: REDIS_URL logs in as {redis.username!r}, expected its own Redis user mp-{s} "
                 "with its password")
    # The roles and schemas: an admin step before the migrations.
    roles = next((n for n, d in svcs.items() if "service-roles.sql" in json.dumps(d.get("command", ""))), None)
    mig = svcs.get("migrate", {})
    if not roles:
        fail("compose: no step runs deploy/postgres/service-roles.sql (the roles mp_<service> and their schemas)")
    else:
        renv = svcs[roles].get("environment", {})
        if renv.get("PGUSER") != admin:
            fail(f"compose: {roles} must run as the administrator {admin} (it creates roles and schemas)")
        missing = [f"POSTGRES_{s.upper()}_PASSWORD" for s in SERVICES if not renv.get(f"POSTGRES_{s.upper()}_PASSWORD")]
        if missing:
            fail(f"compose: {roles} gets no {', '.join(missing)}")
        if mig.get("depends_on", {}).get(roles, {}).get("condition") != "service_completed_successfully":
            fail(f"compose: migrate must wait for {roles} (the schemas are made for the services' roles)")
    menv = mig.get("environment", {})
    cmd = json.dumps(mig.get("command", ""))
    for s in SERVICES:
        u = url(menv.get(f"{s.upper()}_DATABASE_URL"))
        if u.username != f"mp_{s}" or not u.password:
            fail(f"compose: migrate: {s.upper()}_DATABASE_URL logs in as {u.username!r}: each service migrates "
                 f"its schema as its own role mp_{s}")
    if "_DATABASE_URL" not in cmd or url(menv.get("DATABASE_URL")).username:
        fail("compose: migrate must run each `<service> migrate` with that service's <SERVICE>_DATABASE_URL "
             "(and no shared DATABASE_URL)")
    # mp_grafana's SELECT on orders.orders (owned by mp_order): as the administrator.
    graf = next((n for n, d in svcs.items() if "grafana-role.sql" in json.dumps(d)), None)
    if graf and svcs[graf].get("environment", {}).get("PGUSER") != admin:
        fail(f"compose: {graf} must run as the administrator {admin}: orders.orders belongs to mp_order")
    # Redis: the ACL file from acl.json, default user off.
    redis = svcs.get("redis", {})
    rcmd = redis.get("command") or []
    rcmd = rcmd.split() if isinstance(rcmd, str) else rcmd
    aclfile = rcmd[rcmd.index("--aclfile") + 1] if "--aclfile" in rcmd[:-1] else None
    if not aclfile:
        fail("compose: redis must start with --aclfile (the users of deploy/redis/acl.json, default off)")
    else:
        step = next((n for n, d in svcs.items() if "redis_acl.py" in json.dumps(d.get("command", ""))), None)
        if not step:
            fail("compose: no step renders Redis's ACL file (deploy/redis/redis_acl.py acl-file)")
        else:
            scmd = [str(c) for c in svcs[step]["command"]]
            out = scmd[scmd.index("--out") + 1] if "--out" in scmd[:-1] else ""
            def mount(d, path):
                for v in d.get("volumes", []):
                    if isinstance(v, str):  # docker-compose v1 prints SOURCE:TARGET[:MODE]
                        src, tgt = (v.split(":") + [""])[:2]
                        v = {"source": src, "target": tgt}
                    if path.startswith(v["target"].rstrip("/") + "/"):
                        return v
            a, b = mount(svcs[step], out), mount(redis, aclfile)
            if not a or not b or a.get("source") != b.get("source") or \
                    out[len(a["target"]):] != aclfile[len(b["target"]):]:
                fail(f"compose: {step} writes {out!r}, which is not the file redis reads ({aclfile!r}) on a shared volume")
            if redis.get("depends_on", {}).get(step, {}).get("condition") != "service_completed_successfully":
                fail(f"compose: redis must wait for {step}")
            senv = svcs[step].get("environment", {})
            missing = [f"REDIS_{n.upper()}_PASSWORD" for n in SERVICES + ["kong"] if not senv.get(f"REDIS_{n.upper()}_PASSWORD")]
            if missing:
                fail(f"compose: {step} gets no {', '.join(missing)}")
    acl_json = ROOT / "deploy/redis/acl.json"
    if not acl_json.exists():
        fail("no deploy/redis/acl.json (the Redis users' rules, from `<service> redis-user --json`)")
    else:
        import importlib.util, os
        spec = importlib.util.spec_from_file_location("redis_acl", ROOT / "deploy/redis/redis_acl.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        os.environ.update({f"REDIS_{n.upper()}_PASSWORD": f"check-{n}" for n in SERVICES + ["kong"]})
        lines = mod.acl_file(mod.load(acl_json)).splitlines()
        users = {l.split()[1]: l.split()[2:] for l in lines if l.startswith("user ")}
        if users.get("default") != ["off"] or [l for l in lines if l.startswith("user default")] != ["user default off"]:
            fail("the Redis ACL file must disable the default user (`user default off`, nothing else)")
        want = {f"mp-{s}" for s in SERVICES} | {"kong", "default"}
        if set(users) != want:
            fail(f"the Redis ACL file defines {sorted(users)}, expected {sorted(want)}")
        for name, words in users.items():
            if name != "default" and (words[0] != "on" or not re.fullmatch(r"#[0-9a-f]{64}", words[1])
                                      or any(w.startswith(">") or w == "nopass" for w in words)):
                fail(f"the Redis ACL file: {name} must be `on` with a SHA-256 password hash only")
    kenv = svcs.get("kong", {}).get("environment", {})
    if not kenv.get("REDIS_KONG_PASSWORD"):
        fail("compose: Kong gets no REDIS_KONG_PASSWORD (its Redis user kong, {vault://env/redis_kong_password})")


def main(argv):
    compose = yaml.safe_load(open(argv[0]))
    rendered = argv[1:]
    grafana(compose)
    grafana_role(compose, rendered)
    fluent_bit(compose)
    n = images(compose, rendered)
    least_privilege(compose)
    print(f"files: Grafana provisioning, mp_grafana, Fluent Bit, {n} images and the services' own "
          "PostgreSQL roles and Redis users checked")
    if failures:
        print("\n".join("files: FAIL: " + f for f in failures), file=sys.stderr)
        sys.exit(1)
    print("files: Grafana, its read-only role, Fluent Bit, the image tags and the services' own credentials agree")


if __name__ == "__main__":
    main(sys.argv[1:])
