#!/usr/bin/env python3
"""dashboard_rules.py (a step of scripts/test-deploy.sh): EXPRS_JSON: the Grafana dashboards' queries, variables replaced, as recording rules for promtool to parse."""
import json, sys, yaml
exprs = json.load(open(sys.argv[1]))
sub = lambda e: e.replace("$__range", "1h").replace("$service", ".*")
rules = [{"record": f"dashboard:query_{i}", "expr": sub(e)} for i, e in enumerate(exprs)]
print(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
