#!/usr/bin/env python3
"""Checks the shape every service has (README, "Layout"): each module of a service sits in
a layer, and may use only modules of its own layer or a lower one, without cycles; HTTP
handlers open no transaction and call no query.

Layers, lowest first:
  0 domain                      rules and types without I/O
  1 config, metrics             settings and instruments
  2 db                          queries
  3 adapters                    what talks to Redis, other services, providers, or renders
  4 services                    the service layer: rules with I/O, transactions, outbox rows
  5 routes, events              the entry points: HTTP handlers and event consumers

A module that is not listed fails the check: a new module is given its layer here.
Run by `make lint`; prints each service's arrows with `-v`.
"""

import os
import re
import sys

LAYERS = {
    "domain": 0,
    "config": 1,
    "metrics": 1,
    "db": 2,
    # adapters
    "clients": 3,
    "store": 3,
    "cache": 3,
    "local_cache": 3,
    "responses": 3,
    "payments": 3,
    "delivery": 3,
    "sender": 3,
    "templates": 3,
    # services
    "carts": 4,
    "checkout": 4,
    "orders": 4,
    "saga": 4,
    "stock": 4,
    "reconcile": 4,
    "catalog": 4,
    "accounts": 4,
    "sessions": 4,
    "throttle": 4,
    "notify": 4,
    # entry points
    "routes": 5,
    "events": 5,
}
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "services")


def code_of(path):
    """The file's code without its tests and comments (doc links are no arrows)."""
    with open(path, encoding="utf-8") as f:
        text = f.read().split("#[cfg(test)]")[0]
    return "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))


def modules(src):
    """Each top-level module of a service with the files it is made of."""
    found = {}
    for directory, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(directory, name), src)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top not in ("lib", "main"):
                found.setdefault(top, []).append(os.path.join(directory, name))
    return found


def uses(code, known):
    """The modules of the same crate this code refers to (`crate::x`, `crate::{x, y}`)."""
    names = set(re.findall(r"\bcrate::(\w+)", code))
    for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
        names |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
    return names & known


def check(service, verbose):
    src = os.path.join(ROOT, service, "src")
    mods = modules(src)
    problems = []
    graph = {}
    for module, files in sorted(mods.items()):
        if module not in LAYERS:
            problems.append(f"{module}: in no layer (add it to scripts/check-layers.py)")
            continue
        codes = [code_of(f) for f in files]
        graph[module] = set().union(*(uses(c, set(mods)) for c in codes)) - {module}
        for target in sorted(graph[module]):
            if LAYERS.get(target, 99) > LAYERS[module]:
                problems.append(f"{module} -> {target}: an arrow up a layer")
        if module == "routes":
            for path, code in zip(files, codes):
                rel = os.path.relpath(path, src)
                if re.search(r"\.begin\(\)", code):
                    problems.append(f"{rel}: a handler opens a transaction")
                for call in re.findall(r"\bdb::[a-z_]+\(", code):
                    problems.append(f"{rel}: a handler calls the query {call[:-1]}")
    # Cycles among the same layer's modules (arrows across layers only go down).
    def visit(node, path):
        for target in sorted(graph.get(node, ())):
            if target in path:
                cycle = path[path.index(target):]
                start = cycle.index(min(cycle))
                cycle = cycle[start:] + cycle[:start]
                problems.append("a cycle: " + " -> ".join(cycle + [cycle[0]]))
            else:
                visit(target, path + [target])
    for node in sorted(graph):
        visit(node, [node])
    if verbose:
        print(f"{service}:")
        for module in sorted(graph, key=lambda m: (LAYERS[m], m)):
            print(f"  {LAYERS[module]} {module:12} -> {', '.join(sorted(graph[module])) or '-'}")
    return sorted(set(problems))


def main():
    verbose = "-v" in sys.argv[1:]
    failed = False
    for service in sorted(os.listdir(ROOT)):
        for problem in check(service, verbose):
            print(f"check-layers: {service}: {problem}", file=sys.stderr)
            failed = True
    if failed:
        sys.exit(1)
    print("check-layers: every service keeps its layers (no arrow up, no cycle, "
          "no transaction or query in a handler)")


if __name__ == "__main__":
    main()
