#!/usr/bin/env bash
# Checks deploy/prometheus/wallet-worker-rules.yml: promtool parses it, its unit tests
# (tests/deploy/prometheus/rules_test.yml) pass, and every alert has both a test in
# which it fires and one in which it must not.
# Usage: check_prometheus_rules.sh <source dir>
set -euo pipefail
src="$1"
rules="$src/deploy/prometheus/wallet-worker-rules.yml"
tests="$src/tests/deploy/prometheus/rules_test.yml"
command -v promtool >/dev/null || { echo "FAIL: promtool is not installed (scripts/bootstrap.sh installs Debian's prometheus package)"; exit 1; }
promtool check rules "$rules"
promtool test rules "$tests"
python3 - "$rules" "$tests" <<'PY'
import sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))
tests = yaml.safe_load(open(sys.argv[2]))
alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
fires, quiet = set(), set()
for t in tests["tests"]:
    for a in t.get("alert_rule_test", []):
        (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
bad = 0
for a in alerts:
    for kind, seen in (("fires", fires), ("does not fire", quiet)):
        if a not in seen:
            print(f"FAIL: no test in which {a} {kind}"); bad = 1
for a in (fires | quiet) - set(alerts):
    print(f"FAIL: tests name {a}, which the rules file does not define"); bad = 1
if not alerts:
    print("FAIL: no alerts found"); bad = 1
if not bad:
    print(f"ok: {len(alerts)} alerts, each with a firing and a quiet test")
sys.exit(bad)
PY
