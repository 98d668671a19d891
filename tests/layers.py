#!/usr/bin/env python3
"""tests/layers.py — the shape of the source tree, from its #include lines (TAP).

DESIGN.md section 1: arrows point down, gateway -> shards -> adapters -> actors -> proto. A file of
one layer may include headers of its own layer and of the layers below, never above; gateway/log.h
and gateway/metrics.h are leaf headers any layer may use. And no two modules (a .h/.c pair) depend on
each other, directly or around a circle: a module depends on another when any of its files includes
the other's header.

Run from anywhere; prints one TAP result per rule, naming every offending include."""

import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LAYERS = ["proto", "actors", "adapters", "shards", "gateway"]
LEAVES = {"gateway/log.h", "gateway/metrics.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(path):
    top = path.split("/")[0]
    return LAYERS.index(top) if top in LAYERS else None


def sources():
    for top in LAYERS:
        for base, _, files in os.walk(os.path.join(ROOT, top)):
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    yield os.path.relpath(os.path.join(base, f), ROOT)


def includes(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
        return INCLUDE.findall(fh.read())


def module_of(path):
    return os.path.splitext(path)[0]


def main():
    n = 0
    failed = 0

    def result(good, what, details):
        nonlocal n, failed
        n += 1
        failed += not good
        print("%s %d - %s" % ("ok" if good else "not ok", n, what))
        for d in details:
            print("#   " + d)

    files = list(sources())
    upward, missing = [], []
    deps = {}
    for f in files:
        me = layer_of(f)
        for inc in includes(f):
            if not os.path.exists(os.path.join(ROOT, inc)):
                if layer_of(inc) is not None:
                    missing.append("%s includes %s, which does not exist" % (f, inc))
                continue
            other = layer_of(inc)
            if other is None:
                continue
            if inc not in LEAVES and other > me:
                upward.append("%s (%s) includes %s (%s)" % (f, LAYERS[me], inc, LAYERS[other]))
            if inc not in LEAVES and module_of(inc) != module_of(f):
                deps.setdefault(module_of(f), set()).add(module_of(inc))

    result(len(files) > 50, "the tree has its sources (%d files)" % len(files), [])
    result(not missing, "every project include names a file that exists", missing)
    result(not upward, "no include points up the layers (gateway > shards > adapters > actors > proto)", upward)

    # Cycles between modules: Tarjan's strongly connected components; any component of two or more is a cycle.
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            visit(v)
    result(not comps, "no two modules include each other, directly or around a circle",
           ["cycle: " + " <-> ".join(c) for c in comps])
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
