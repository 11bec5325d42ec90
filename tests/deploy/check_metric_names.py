#!/usr/bin/env python3
"""Checks the PromQL of the alert rules and the Grafana dashboard.

  check_metric_names.py RULES DASHBOARD [METRICS]

Every expression (alert rules; dashboard targets and template queries, with
Grafana's $variables replaced by sample values) must parse: they are written
into a temporary rules file as recording rules and checked with
`promtool check rules`. With METRICS (a /metrics scrape of a live worker, see
tests/integration/it_health.c), every metric name they use must be one the
worker exports; name_bucket/_sum/_count count as the histogram `name`.
Exit 0 when all is well, 1 otherwise (each problem on its own FAIL line)."""
import json, os, re, subprocess, sys, tempfile

import yaml

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}


def rule_exprs(path):
    doc = yaml.safe_load(open(path))
    for g in doc["groups"]:
        for r in g["rules"]:
            yield "rule " + r.get("alert", r.get("record", "?")), r["expr"]


def dashboard_exprs(path):
    dash = json.load(open(path))

    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield f"panel '{p.get('title')}' {t.get('refId')}", t["expr"]
    yield from walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*", q or "")
        if v.get("type") == "query":
            if not m:
                yield f"variable {v['name']}", q   # not label_values(): must be PromQL
            else:
                yield f"variable {v['name']}", m.group(1)


def grafana_to_promql(expr):
    expr = re.sub(r"\$__rate_interval|\$__interval|\$__range", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr):
    e = re.sub(r'"(\\.|[^"\\])*"', '""', expr)                  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                               # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                              # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        tail = e[m.end():].lstrip()
        if tail.startswith("("):
            continue                                               # a function
        tok = m.group(0)
        if tok.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]", tok):
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue                                               # 1e3, 0.5
        names.add(tok)
    return names


def exported(metrics_path):
    names = set()
    for line in open(metrics_path):
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            names.add(m.group(1))
            if m.group(2) in ("histogram", "summary"):
                names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    return names


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    exprs = list(rule_exprs(sys.argv[1])) + list(dashboard_exprs(sys.argv[2]))
    bad = 0
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "expressions", "rules": [
            {"record": f"check:expr_{i}", "expr": grafana_to_promql(e)}
            for i, (_, e) in enumerate(exprs)]}]}, f)
    try:
        r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        print("FAIL: promtool rejects an expression:\n" + r.stdout + r.stderr)
        for i, (where, e) in enumerate(exprs):
            print(f"  check:expr_{i} = {where}: {e}")
        bad = 1
    else:
        print(f"ok: {len(exprs)} expressions parse (promtool)")
    used = {}
    for where, e in exprs:
        for n in metric_names(grafana_to_promql(e)):
            used.setdefault(n, where)
    if not used:
        print("FAIL: found no metric names"); bad = 1
    if len(sys.argv) == 4:
        have = exported(sys.argv[3])
        for n, where in sorted(used.items()):
            if n in have:
                print(f"ok: {n} is exported")
            else:
                print(f"FAIL: {n} (used by {where}) is not a metric the worker exports"); bad = 1
    else:
        print("metric names used: " + " ".join(sorted(used)))
    return bad


if __name__ == "__main__":
    sys.exit(main())
