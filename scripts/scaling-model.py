#!/usr/bin/env python3
"""scaling-model.py: SCALING.md's capacity model, rerun from measured figures.

Reads the profile of one checkout from `mp-load --checkout-rates` (by default
.local/checkout-results.json, written by scripts/bench-checkout.sh; the row of the
lowest offered rate, which runs below saturation) and prints, for clusters of growing
size, the checkouts/s each tier carries and which one binds first:

  services    the six services' CPU per checkout over the service nodes' cores
  postgresql  PostgreSQL's CPU per checkout over the primary's cores
  rabbitmq    RabbitMQ's CPU per checkout over the broker nodes' cores, and one
              quorum queue (one Raft leader, about one core) over the deliveries a
              checkout makes to the busiest queue (measured per queue)
  redis       one Redis thread over the reservation scripts a checkout runs

Each tier is planned at a utilisation (UTIL below) so that p99 stays bounded: a queue
near 100 % grows without bound, as the 2-core runs show. The per-queue and Redis
ceilings are the measured ones (`mp-load --queue-probe`, bench.sh's reservation run),
overridable with --queue-msgs and --redis-ops.

usage: scaling-model.py [checkout-results.json] [--queue-msgs N] [--redis-ops N]
"""

import json
import sys
from pathlib import Path

SERVICES = ["cart", "customer", "inventory", "notification", "order", "vendor"]
# Planned utilisation per tier (assumptions, not measurements).
UTIL = {"services": 0.7, "postgresql": 0.6, "rabbitmq": 0.5, "queue": 0.5, "redis": 0.5}
# Measured on the 2-core machine (BENCHMARKS.md): one quorum queue's end-to-end
# messages/s with one core's worth of RabbitMQ CPU (80 us a message), and one Redis
# thread's reservations/s (69 us each).
QUEUE_MSGS = 12_500
REDIS_OPS = 14_500
# Redis scripts per checkout (the reservation at the add, the commit at the stock step,
# a renewal or release): read off the flow, not measured.
REDIS_PER_CHECKOUT = 3

# Cluster shapes: (name, service cores, PostgreSQL primary cores, broker cores).
SHAPES = [
    ("3 nodes x 8 cores: services, PostgreSQL, broker one each", 8, 8, 8),
    ("6 nodes x 8: 3 services, PostgreSQL on 16, 2 brokers", 24, 16, 16),
    ("12 nodes x 8: 8 services, PostgreSQL on 32, 3 brokers", 64, 32, 24),
    ("24 nodes x 8: 19 services, PostgreSQL on 64, 4 brokers", 152, 64, 32),
]


def arg(name, default):
    if name in sys.argv:
        return float(sys.argv[sys.argv.index(name) + 1])
    return default


def main():
    files = [a for a in sys.argv[1:] if a.endswith(".json")]
    path = Path(files[0] if files else Path(__file__).resolve().parent.parent / ".local/checkout-results.json")
    queue_msgs = arg("--queue-msgs", QUEUE_MSGS)
    redis_ops = arg("--redis-ops", REDIS_OPS)
    rows = json.loads(path.read_text())["checkout"]
    row = min(rows, key=lambda r: r["offered_per_sec"])
    cpu = row["per_checkout"]["cpu_ms"]
    services_ms = sum(cpu.get(s, 0.0) for s in SERVICES)
    pg_ms = cpu.get("postgresql", 0.0)
    mq_ms = cpu.get("rabbitmq", 0.0)
    print(f"one checkout ({path.name}, {row['offered_per_sec']:.0f}/s offered): services {services_ms:.1f} ms, "
          f"PostgreSQL {pg_ms:.1f} ms ({row['per_checkout'].get('commits')} transactions), RabbitMQ {mq_ms:.1f} ms, "
          f"{row['per_checkout']['deliveries_handled']} deliveries")
    by_queue = row["per_checkout"].get("deliveries_by_queue") or {"order": 3.0}
    busiest = max(by_queue, key=by_queue.get)
    queue = UTIL["queue"] * queue_msgs / by_queue[busiest]
    redis = UTIL["redis"] * redis_ops / REDIS_PER_CHECKOUT
    total_ms = row["per_checkout"]["cpu_ms_total"]
    print(f"this machine: 2 cores for everything at {total_ms:.1f} ms a checkout: at most {2000 / total_ms:.0f}/s "
          f"(measured: {max(r['completed_per_sec'] for r in rows):.0f}/s)")
    print(f"fixed ceilings: one quorum queue ({busiest}'s, {by_queue[busiest]:.0f} deliveries a checkout) "
          f"{queue:,.0f} checkouts/s, one Redis {redis:,.0f} checkouts/s")
    print()
    print(f"{'cluster':<58} {'services':>9} {'postgres':>9} {'rabbitmq':>9}  first bottleneck")
    for name, svc_cores, pg_cores, mq_cores in SHAPES:
        tiers = {
            "services": UTIL["services"] * svc_cores * 1000 / services_ms,
            "postgresql": UTIL["postgresql"] * pg_cores * 1000 / pg_ms,
            "rabbitmq": UTIL["rabbitmq"] * mq_cores * 1000 / mq_ms,
            "one quorum queue": queue,
            "one Redis": redis,
        }
        first = min(tiers, key=tiers.get)
        print(f"{name:<58} {tiers['services']:>9,.0f} {tiers['postgresql']:>9,.0f} {tiers['rabbitmq']:>9,.0f}"
              f"  {first} at {tiers[first]:,.0f}/s")
    print()
    for factor, target in [(1, 300), (10, 3_000), (100, 30_000)]:
        need = {
            "service cores": target * services_ms / 1000 / UTIL["services"],
            "PostgreSQL cores": target * pg_ms / 1000 / UTIL["postgresql"],
            "broker cores": target * mq_ms / 1000 / UTIL["rabbitmq"],
            f"{busiest}-queue partitions": target / queue,
            "Redis shards": target / redis,
        }
        print(f"{factor:>3}x ({target:,}/s) needs: " + ", ".join(f"{v:,.1f} {k}" for k, v in need.items()))


if __name__ == "__main__":
    main()
