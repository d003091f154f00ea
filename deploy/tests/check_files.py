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
"""
import configparser
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["customer", "order", "notification", "inventory", "vendor", "cart"]
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


def main(argv):
    compose = yaml.safe_load(open(argv[0]))
    rendered = argv[1:]
    grafana(compose)
    grafana_role(compose, rendered)
    fluent_bit(compose)
    n = images(compose, rendered)
    print(f"files: Grafana provisioning, mp_grafana, Fluent Bit and {n} images checked")
    if failures:
        print("\n".join("files: FAIL: " + f for f in failures), file=sys.stderr)
        sys.exit(1)
    print("files: Grafana, its read-only role, Fluent Bit and the image tags agree")


if __name__ == "__main__":
    main(sys.argv[1:])
