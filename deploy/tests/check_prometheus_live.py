#!/usr/bin/env python3
"""check_prometheus_live.py (a step of scripts/test-deploy.sh): API RULE_FILES...: a real Prometheus scraping the fleet has every target up and loaded every rule."""
import json, sys, time, urllib.request, yaml
api, rule_files = sys.argv[1], sys.argv[2:]
want_rules = {r.get("alert") or r.get("record") for f in rule_files for g in yaml.safe_load(open(f))["groups"] for r in g["rules"]}
def get(path):
    with urllib.request.urlopen(api + path, timeout=5) as r:
        return json.load(r)["data"]
deadline, last = time.monotonic() + 90, "Prometheus did not answer"
while time.monotonic() < deadline:
    try:
        targets = get("/api/v1/targets")["activeTargets"]
        up = {t["labels"]["service"] for t in targets if t["health"] == "up"}
        groups = get("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        loaded = {r["name"] for r in rules}
        evaluated = [r for r in rules if r.get("lastEvaluation", "").startswith("0001")]  # never evaluated yet
        broken = [f"{r['name']}: {r['lastError']}" for r in rules if r.get("lastError")]
        if broken:
            sys.exit("prometheus: rules fail to evaluate: " + "; ".join(broken))
        last = f"targets up: {sorted(up)}; rules loaded: {len(want_rules & loaded)}/{len(want_rules)}"
        if len(up) == 6 and len(targets) == 6 and want_rules <= loaded and not evaluated \
                and all(r.get("health") == "ok" for r in rules):
            print(f"prometheus: 6/6 targets up, {len(want_rules)} alert rules and "
                  f"{len(rules) - len(want_rules)} dashboard queries loaded and evaluated without error")
            firing = [a["labels"]["alertname"] for a in get("/api/v1/alerts")["alerts"] if a["state"] == "firing"]
            print(f"prometheus: alerts firing now: {firing or 'none'}")
            sys.exit(0)
    except OSError as e:
        last = f"Prometheus not answering: {e}"
    time.sleep(1)
sys.exit(f"prometheus: not all targets up / rules loaded in time ({last})")
