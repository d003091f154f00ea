#!/usr/bin/env python3
"""Every metric used by the alert rules and the Grafana dashboards is one the
services really export.

    check_metrics.py SCRAPE_DIR RULES.yml... -- DASHBOARD_EXPRS.json

SCRAPE_DIR holds <service>.metrics, each a live scrape of /metrics of a running
service (taken after some traffic, so labelled series exist). A name passes if
a scraped sample or a `# TYPE` line has it (histograms: name_bucket/_sum/_count).
Allowed besides: `up` (Prometheus' own), rabbitmq_* (RabbitMQ's
rabbitmq_prometheus plugin, not a service), kong_* (Kong's prometheus plugin),
and the few labelled series that
appear only after a rare event (listed in AFTER_RARE_EVENT with that event).
"""
import json
import re
import sys
from pathlib import Path

import yaml

# Labelled counters have no series until their first increment (the Rust
# prometheus client exposes no empty vector); these need an incident to exist.
AFTER_RARE_EVENT = {
    "order_saga_compensations_total": "an order compensated after the hard timeout",
    "outbox_publish_failures_total": "a broker that refuses or does not confirm",
}
EXTERNAL_PREFIXES = ("rabbitmq_", "kong_")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "inf", "nan", "le", "atan2"}


def names_in(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # strings
    e = re.sub(r"\{[^}]*\}", "", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                         # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    out = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        tok = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or tok.lower() in PROMQL_WORDS or tok.startswith("__"):
            continue  # a function, keyword or Grafana variable
        if m.start() > 0 and e[m.start() - 1] in "$.0123456789":
            continue  # $service, 1e-9
        out.add(tok)
    return out


def main(argv):
    sep = argv.index("--")
    scrape_dir, rule_files, dash_json = argv[0], argv[1:sep], argv[sep + 1]
    exported = set()
    for f in Path(scrape_dir).glob("*.metrics"):
        for line in f.read_text().splitlines():
            if line.startswith("# TYPE "):
                exported.add(line.split()[2])
            elif line and not line.startswith("#"):
                exported.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    if not exported:
        sys.exit(f"metrics: no scrape in {scrape_dir}")

    used = {}
    for rf in rule_files:
        for g in yaml.safe_load(Path(rf).read_text())["groups"]:
            for r in g["rules"]:
                for n in names_in(r["expr"]):
                    used.setdefault(n, set()).add(f"rule {r.get('alert') or r.get('record')}")
    for e in json.loads(Path(dash_json).read_text()):
        for n in names_in(e):
            used.setdefault(n, set()).add("dashboards")

    bad = []
    for name, where in sorted(used.items()):
        if name == "up" or name.startswith(EXTERNAL_PREFIXES):
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in exported or base in exported:
            continue
        if name in AFTER_RARE_EVENT:
            print(f"metrics: {name} not in the scrape (appears after {AFTER_RARE_EVENT[name]})")
            continue
        bad.append(f"{name} (used by {', '.join(sorted(where))}) is not exported by any service")
    print(f"metrics: {len(used)} metric names used, {len(exported)} exported by the running services")
    if bad:
        print("\n".join("metrics: FAIL: " + b for b in bad), file=sys.stderr)
        sys.exit(1)
    print("metrics: every metric in the rules and dashboards is exported")


if __name__ == "__main__":
    main(sys.argv[1:])
