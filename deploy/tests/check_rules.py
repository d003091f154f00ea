#!/usr/bin/env python3
"""The alert rules cover what operators must hear about, and each alert has a
promtool unit test.

    check_rules.py RULES.yml... -- TESTS.test.yml...

- per service: an alert for "no replica up" that names the service, i.e.
  absent(up{job="marketplace", service="<service>"} ...) for each of the six
  (a single absent() over all services stays silent while five of them run);
- a service with replicas but none ready; PostgreSQL, RabbitMQ and Redis
  unreachable; Kong down and Kong's 5xx rate; dead letters present and growing;
  outbox lag; stuck sagas;
- every alert name is tested (alertname of an alert_rule_test) in the unit tests.
"""
import re
import sys
from pathlib import Path

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in deploy/
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import services  # noqa: E402  (deploy/services.py)

SERVICES = services.names()
REQUIRED = {
    "ServiceNotReady": "a service with replicas up but none ready",
    "PostgresUnreachable": "PostgreSQL unreachable",
    "RabbitMQUnreachable": "RabbitMQ unreachable",
    "RedisUnreachable": "Redis unreachable",
    "KongDown": "no Kong instance up",
    "Kong5xxRate": "Kong's 5xx rate",
    "DeadLettersPresent": "dead letters present",
    "DeadLettersGrowing": "dead-letter queue growing",
    "OutboxLag": "outbox lag",
    "SagaStuck": "stuck sagas",
}


def main(argv):
    sep = argv.index("--")
    rule_files, test_files = argv[:sep], argv[sep + 1:]
    alerts = [r for f in rule_files for g in yaml.safe_load(open(f))["groups"] for r in g["rules"] if "alert" in r]
    names = {a["alert"] for a in alerts}
    tested = {t["alertname"] for f in test_files for case in yaml.safe_load(open(f))["tests"]
              for t in case.get("alert_rule_test", [])}
    failures = []
    for svc in SERVICES:
        pat = re.compile(r'absent\(\s*up\{[^}]*service="%s"' % svc)
        hits = [a for a in alerts if pat.search(a["expr"])]
        if not hits:
            failures.append(f'no alert for "no {svc} replica up": absent(up{{job="marketplace", service="{svc}"}} == 1)')
        elif not all(a.get("labels", {}).get("service") == svc for a in hits):
            failures.append(f"the absence alert for {svc} must carry the label service: {svc} (absent() has no labels)")
    for name, what in REQUIRED.items():
        if name not in names:
            failures.append(f"no alert {name} ({what})")
    for name in sorted(names - tested):
        failures.append(f"alert {name} has no promtool unit test (alert_rule_test with alertname: {name})")
    print(f"rules: {len(alerts)} alert rules, {len(names)} alert names, {len(names & tested)} tested")
    if failures:
        print("\n".join("rules: FAIL: " + f for f in failures), file=sys.stderr)
        sys.exit(1)
    print("rules: every service's absence, dependencies, Kong, dead letters, outbox and sagas alert; every alert is tested")


if __name__ == "__main__":
    main(sys.argv[1:])
