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
# the secure overlay (docker-compose.secure.yml) takes its secrets from the environment
secure_env=(env KAFKA_SASL_PASSWORD=check MONGODB_URI=mongodb://check/wallet WW_CA_FILE=/dev/null)
"${secure_env[@]}" docker-compose -f docker-compose.yml -f docker-compose.secure.yml config -q
echo "ok: docker-compose.secure.yml is a valid overlay"
if docker-compose -f docker-compose.yml -f docker-compose.secure.yml config -q 2>/dev/null; then
  echo "FAIL: docker-compose.secure.yml starts without KAFKA_SASL_PASSWORD and MONGODB_URI"; exit 1
fi
echo "ok: docker-compose.secure.yml refuses to start without its secrets"
# the worker's environment variables in the compose config on stdin
worker_vars() { python3 -c '
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
'; }
vars=$( { docker-compose -f docker-compose.yml config | worker_vars
          "${secure_env[@]}" docker-compose -f docker-compose.yml -f docker-compose.secure.yml config |
            worker_vars; } | sort -u)
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
