#!/usr/bin/env python3
"""Writes the Grafana dashboards (deploy/grafana/dashboards/*.json) from the
panel lists below: one place to read what each dashboard shows. Run after a
change; scripts/test-deploy.sh fails when the JSON is stale and checks every
metric named here against a live scrape of the services.

    python3 deploy/grafana/generate.py
"""
import json
import sys
from pathlib import Path

PROM = {"type": "prometheus", "uid": "prometheus"}
PG = {"type": "grafana-postgresql-datasource", "uid": "marketplace-postgres"}
SVC = 'service=~"$service"'


def ts(title, *exprs, unit="short", legend=None, w=12, h=8, stack=False):
    return dict(kind="timeseries", title=title, exprs=exprs, unit=unit, legend=legend, w=w, h=h, stack=stack)


def stat(title, expr, unit="short", legend=None, w=6, h=4, thresholds=None):
    return dict(kind="stat", title=title, exprs=(expr,), unit=unit, legend=legend, w=w, h=h, thresholds=thresholds)


def sql(title, query, unit="currencyEUR", w=24, h=8):
    return dict(kind="sql", title=title, query=query, unit=unit, w=w, h=h)


def row(title):
    return dict(kind="row", title=title)


SERVICE_VAR = {"name": "service", "label": "Service", "type": "query", "datasource": PROM,
               "query": {"query": 'label_values(up{job="marketplace"}, service)', "refId": "service"},
               "definition": 'label_values(up{job="marketplace"}, service)',
               "refresh": 2, "includeAll": True, "multi": True, "current": {"text": "All", "value": "$__all"}}

DASHBOARDS = {
    "fleet-overview": dict(title="Marketplace: fleet overview", vars=[], panels=[
        stat("Services up", 'sum(up{job="marketplace"})', thresholds=[(0, "red"), (6, "green")]),
        stat("Requests/s", 'sum(rate(http_requests_total[5m]))', unit="reqps"),
        stat("5xx ratio", 'sum(rate(http_requests_total{status="5xx"}[5m])) / clamp_min(sum(rate(http_requests_total[5m])), 1e-9)',
             unit="percentunit", thresholds=[(0, "green"), (0.01, "red")]),
        stat("Dead letters", 'sum(max by (service) (dead_letter_messages))', thresholds=[(0, "green"), (1, "red")]),
        ts("Up, by service", 'min by (service) (up{job="marketplace"})', legend="{{service}}"),
        ts("Requests/s, by service", 'sum by (service) (rate(http_requests_total[5m]))', unit="reqps", legend="{{service}}"),
        ts("5xx ratio, by service",
           'sum by (service) (rate(http_requests_total{status="5xx"}[5m])) / clamp_min(sum by (service) (rate(http_requests_total[5m])), 1e-9)',
           unit="percentunit", legend="{{service}}"),
        ts("p99 latency, by service",
           'histogram_quantile(0.99, sum by (service, le) (rate(http_request_duration_seconds_bucket{route!~"/health.*|/metrics"}[5m])))',
           unit="s", legend="{{service}}"),
        ts("Workers down", 'sum by (service, worker) (1 - worker_up)', legend="{{service}} {{worker}}"),
        ts("Outbox lag (oldest unpublished event)", 'max by (service) (outbox_oldest_pending_seconds)', unit="s", legend="{{service}}"),
        ts("Resident memory", 'sum by (service, instance) (process_resident_memory_bytes{job="marketplace"})', unit="bytes", legend="{{instance}}"),
        ts("CPU", 'sum by (service, instance) (rate(process_cpu_seconds_total{job="marketplace"}[5m]))', unit="percentunit", legend="{{instance}}"),
    ]),
    "service": dict(title="Marketplace: per service (rate, errors, duration)", vars=[SERVICE_VAR], panels=[
        ts("Requests/s, by route", f'sum by (service, method, route) (rate(http_requests_total{{{SVC}}}[5m]))',
           unit="reqps", legend="{{service}} {{method}} {{route}}"),
        ts("Errors/s, by status class", f'sum by (service, status) (rate(http_requests_total{{{SVC}, status=~"4xx|5xx"}}[5m]))',
           unit="reqps", legend="{{service}} {{status}}"),
        ts("Duration p50 / p95 / p99",
           f'histogram_quantile(0.5, sum by (service, le) (rate(http_request_duration_seconds_bucket{{{SVC}, route!~"/health.*|/metrics"}}[5m])))',
           f'histogram_quantile(0.95, sum by (service, le) (rate(http_request_duration_seconds_bucket{{{SVC}, route!~"/health.*|/metrics"}}[5m])))',
           f'histogram_quantile(0.99, sum by (service, le) (rate(http_request_duration_seconds_bucket{{{SVC}, route!~"/health.*|/metrics"}}[5m])))',
           unit="s", legend="{{service}}"),
        ts("p99, by route",
           f'histogram_quantile(0.99, sum by (service, route, le) (rate(http_request_duration_seconds_bucket{{{SVC}}}[5m])))',
           unit="s", legend="{{service}} {{route}}"),
        ts("In flight", f'sum by (service) (http_requests_in_flight{{{SVC}}})', legend="{{service}}"),
        ts("Worker restarts (15 min)", f'sum by (service, worker) (increase(worker_restarts_total{{{SVC}}}[15m]))',
           legend="{{service}} {{worker}}"),
        ts("Resident memory", f'process_resident_memory_bytes{{{SVC}}}', unit="bytes", legend="{{instance}}"),
        ts("Open file descriptors", f'process_open_fds{{{SVC}}}', legend="{{instance}}"),
    ]),
    "events": dict(title="Marketplace: events (outbox, retries, dead letters)", vars=[SERVICE_VAR], panels=[
        ts("Outbox pending", f'sum by (service) (max by (service, instance) (outbox_pending{{{SVC}}}))', legend="{{service}}"),
        ts("Outbox lag (oldest unpublished event)", f'max by (service) (outbox_oldest_pending_seconds{{{SVC}}})', unit="s", legend="{{service}}"),
        ts("Published/s and publish failures/s",
           f'sum by (service) (rate(outbox_published_total{{{SVC}}}[5m]))',
           f'sum by (service) (rate(outbox_publish_failures_total{{{SVC}}}[5m]))', legend="{{service}}"),
        ts("Relay batch publish p99", f'histogram_quantile(0.99, sum by (service, le) (rate(outbox_publish_seconds_bucket{{{SVC}}}[5m])))',
           unit="s", legend="{{service}}"),
        ts("Deliveries/s, by outcome (ok, duplicate, retried, dead_lettered)",
           f'sum by (service, outcome) (rate(events_consumed_total{{{SVC}}}[5m]))', legend="{{service}} {{outcome}}", stack=True),
        ts("Retries and dead-lettered, by event type",
           f'sum by (service, event_type, outcome) (increase(events_consumed_total{{{SVC}, outcome=~"retried|dead_lettered"}}[15m]))',
           legend="{{service}} {{event_type}} {{outcome}}"),
        ts("Dead-letter queue size", f'max by (service) (dead_letter_messages{{{SVC}}})', legend="{{service}}"),
        ts("Queue depth (RabbitMQ, ready messages)", 'sum by (queue) (rabbitmq_detailed_queue_messages_ready{queue=~"marketplace\\\\..*"})',
           legend="{{queue}}"),
        ts("Event hop p99 (outbox commit to consumer commit), by type",
           'histogram_quantile(0.99, sum by (event_type, le) (rate(event_hop_seconds_bucket[5m])))', unit="s", legend="{{event_type}}"),
        ts("Handler p99, by handler",
           f'histogram_quantile(0.99, sum by (service, handler, le) (rate(event_handler_seconds_bucket{{{SVC}}}[5m])))',
           unit="s", legend="{{service}} {{handler}}"),
    ]),
    "business": dict(title="Marketplace: business (orders, checkouts, revenue, stock)", vars=[], panels=[
        stat("Orders confirmed (range)", 'sum(increase(order_checkout_outcomes_total{status="confirmed"}[$__range]))'),
        stat("Payment failures (range)", 'sum(increase(order_checkout_outcomes_total{status="payment_failed"}[$__range]))'),
        stat("Stuck sagas", 'sum(order_saga_stuck)', thresholds=[(0, "green"), (1, "red")]),
        stat("Low-stock alerts (range)", 'sum(increase(inventory_low_stock_alerts_total[$__range]))'),
        sql("Revenue per hour (confirmed, shipped and delivered orders)",
            "SELECT $__timeGroupAlias(created_at, 1h), currency AS metric, sum(total) / 100.0 AS value\n"
            "FROM orders.orders\n"
            "WHERE $__timeFilter(created_at) AND status IN ('confirmed', 'shipped', 'delivered')\n"
            "GROUP BY 1, 2 ORDER BY 1"),
        ts("Orders reaching a status, per minute", 'sum by (status) (rate(order_checkout_outcomes_total[5m])) * 60',
           legend="{{status}}", stack=True),
        ts("Checkout requests, by outcome, per minute", 'sum by (outcome) (rate(cart_checkouts_total[5m])) * 60',
           legend="{{outcome}}", stack=True),
        ts("Payments, by operation and outcome, per minute", 'sum by (operation, outcome) (rate(order_payments_total[5m])) * 60',
           legend="{{operation}} {{outcome}}"),
        ts("Charge duration p99", 'histogram_quantile(0.99, sum by (le) (rate(order_charge_duration_seconds_bucket[5m])))', unit="s"),
        ts("Sagas stuck / compensated, by step", 'sum by (step) (order_saga_stuck)',
           'sum by (step) (increase(order_saga_compensations_total[15m]))', legend="{{step}}"),
        ts("Reservations, by outcome, per minute", 'sum by (outcome) (rate(inventory_reservations_total[5m])) * 60',
           legend="{{outcome}}", stack=True),
        ts("Low-stock alerts per hour", 'sum(rate(inventory_low_stock_alerts_total[1h])) * 3600'),
        ts("Carts opened and abandoned, per minute", 'sum(rate(cart_carts_opened_total[5m])) * 60',
           'sum(rate(cart_carts_abandoned_total[5m])) * 60'),
        ts("Notifications sent / failed, by channel, per minute", 'sum by (channel) (rate(notifications_sent_total[5m])) * 60',
           'sum by (channel) (rate(notifications_failed_total[5m])) * 60', legend="{{channel}}"),
    ]),
}


def panel(p, pid, x, y):
    base = {"id": pid, "title": p["title"], "gridPos": {"x": x, "y": y, "w": p.get("w", 24), "h": p.get("h", 1)}}
    if p["kind"] == "row":
        return {**base, "type": "row", "collapsed": False, "panels": []}
    if p["kind"] == "sql":
        return {**base, "type": "timeseries", "datasource": PG,
                "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
                "targets": [{"refId": "A", "datasource": PG, "format": "time_series", "rawQuery": True,
                             "editorMode": "code", "rawSql": p["query"]}]}
    targets = [{"refId": chr(65 + i), "datasource": PROM, "expr": e,
                **({"legendFormat": p["legend"]} if p["legend"] else {})} for i, e in enumerate(p["exprs"])]
    defaults = {"unit": p["unit"]}
    if p["kind"] == "stat":
        steps = [{"color": c, "value": None if i == 0 else v} for i, (v, c) in enumerate(p.get("thresholds") or [(0, "green")])]
        defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        return {**base, "type": "stat", "datasource": PROM, "targets": targets,
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "background", "graphMode": "area"}}
    if p.get("stack"):
        defaults["custom"] = {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 30}
    return {**base, "type": "timeseries", "datasource": PROM, "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def dashboard(uid, d):
    panels, x, y, rowh = [], 0, 0, 0
    for i, p in enumerate(d["panels"], start=1):
        w = p.get("w", 24)
        if x + w > 24:
            x, y = 0, y + rowh
            rowh = 0
        panels.append(panel(p, i, x, y))
        x, rowh = x + w, max(rowh, p.get("h", 1))
    return {"uid": f"marketplace-{uid}", "title": d["title"], "tags": ["marketplace"], "editable": False,
            "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "timezone": "utc", "graphTooltip": 1, "templating": {"list": d["vars"]},
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                      "enable": True, "hide": True, "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [{"title": "Marketplace", "type": "dashboards", "tags": ["marketplace"], "asDropdown": True}],
            "panels": panels}


def exprs():
    """Every PromQL expression of every dashboard (for the metric-name check)."""
    return [e for d in DASHBOARDS.values() for p in d["panels"] for e in p.get("exprs", ())]


if __name__ == "__main__":
    if sys.argv[1:] == ["--exprs"]:
        print(json.dumps(exprs()))
        sys.exit(0)
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "dashboards")
    out.mkdir(parents=True, exist_ok=True)
    for uid, d in DASHBOARDS.items():
        (out / f"{uid}.json").write_text(json.dumps(dashboard(uid, d), indent=2) + "\n")
