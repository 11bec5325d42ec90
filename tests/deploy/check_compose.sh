#!/usr/bin/env bash
# Validates docker-compose.yml with Debian's docker-compose and checks that
# every environment variable it gives the worker is a documented setting
# (docs/configuration.md) and is accepted by the worker binary itself.
# Usage: check_compose.sh <source dir> <wallet-worker binary>
set -euo pipefail
src="$1"
bin="$2"
cd "$src"
command -v docker-compose >/dev/null || { echo "FAIL: docker-compose is not installed (scripts/bootstrap.sh installs it)"; exit 1; }
docker-compose -f docker-compose.yml config -q
echo "ok: docker-compose.yml is valid"
vars=$(docker-compose -f docker-compose.yml config | python3 -c '
import sys, json
try:
    import yaml
except ImportError:
    yaml = None
text = sys.stdin.read()
if yaml:
    doc = yaml.safe_load(text)
    env = doc["services"]["worker"].get("environment", {})
    print("\n".join(sorted(env)))
else:
    # minimal fallback: the worker service block, "KEY: value" lines under environment
    inside = False; envb = False
    for line in text.splitlines():
        if line.startswith("  worker:"): inside = True; continue
        if inside and line.startswith("  ") and not line.startswith("    "): break
        if inside and line.strip() == "environment:": envb = True; continue
        if envb:
            if line.startswith("      ") and ":" in line: print(line.split(":")[0].strip())
            elif line.startswith("    ") and not line.startswith("      "): envb = False
')
[ -n "$vars" ] || { echo "FAIL: found no worker environment in docker-compose.yml"; exit 1; }
fail=0
env_args=()
for v in $vars; do
  if grep -q "| \`$v\` |" docs/configuration.md; then
    echo "ok: $v is documented"
  else
    echo "FAIL: $v is set by docker-compose.yml but not documented in docs/configuration.md"; fail=1
  fi
  grep -q "$v" <("$bin" --help) || { echo "FAIL: $v is not a setting of the worker (--help)"; fail=1; }
done
exit $fail
