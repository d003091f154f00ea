#!/usr/bin/env python3
"""check_compose_rendered.py (a step of scripts/test-deploy.sh): COMPOSE_YML COMPOSE_LOGGING_YML: `docker-compose config` output holds every service with the settings the deploy relies on."""
import sys, yaml
base, logging = (yaml.safe_load(open(f)) for f in sys.argv[1:3])
want = {"postgres", "postgres-roles", "redis", "redis-acl", "rabbitmq", "rabbitmq-users", "migrate", "customer",
        "order", "notification", "inventory", "vendor", "cart", "kong-config", "kong", "prometheus", "grafana",
        "maildev"}
svcs = base["services"]
missing = want - set(svcs)
assert not missing, f"compose: missing services {missing}"
for s in ("customer", "order", "notification", "inventory", "vendor", "cart"):
    d = svcs[s]
    assert d.get("healthcheck"), f"compose: {s} has no health check"
    assert d["depends_on"]["migrate"]["condition"] == "service_completed_successfully", f"compose: {s} does not wait for migrations"
    assert d.get("read_only") is True, f"compose: {s} is not read-only"
    assert not d.get("ports"), f"compose: {s} is published on the host; only Kong is the way in"
    assert f"amqp://{s}:" in d["environment"]["AMQP_URL"], f"compose: {s} does not use its own RabbitMQ user"
assert svcs["kong"]["environment"]["KONG_DATABASE"] == "off", "compose: Kong must be DB-less"
# Clients reach Kong directly on the host port: nobody in front may set the
# client address (trusting 0.0.0.0/0 lets any client forge X-Forwarded-For, and
# with it the rate limits and the services' per-address login limits).
trusted = [t.strip() for t in str(svcs["kong"]["environment"].get("KONG_TRUSTED_IPS", "")).split(",") if t.strip()]
assert not {"0.0.0.0/0", "::/0"} & set(trusted), f"compose: Kong trusts every address ({trusted})"
# The customer service believes X-Forwarded-For from Kong alone (its fixed
# address): from nobody, every client would share Kong's address and one could
# lock all out of logging in; from more, a client could pick its own.
kong_ip = svcs["kong"]["networks"]["default"]["ipv4_address"]
assert svcs["customer"]["environment"].get("TRUSTED_PROXIES") == kong_ip, \
    f"compose: the customer service must trust exactly Kong ({kong_ip}) for X-Forwarded-For"
assert {"opensearch", "opensearch-dashboards", "fluent-bit"} <= set(logging["services"]), "compose: logging profile incomplete"
for s in ("opensearch", "opensearch-dashboards", "fluent-bit"):
    assert logging["services"][s].get("profiles") == ["logging"], f"compose: {s} must be behind the logging profile"
print(f"compose: {len(svcs)} services, {len(logging['services'])} with the logging profile: ok")
