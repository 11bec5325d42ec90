#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/wallet-worker:
#  - `helm lint --strict` and `helm template` with the default values and with
#    tests/deploy/helm/values-full.yaml (every value set);
#  - every environment variable a rendered container of the worker image gets is a
#    setting `wallet-worker --help` knows, with no duplicates;
#  - the required settings (KAFKA_BROKERS, MONGODB_URI, HTTP_ADDR) are set explicitly
#    and not to a loopback address (the binary's defaults point at 127.0.0.1);
#  - every setting of `--help` has a value in values.yaml (or is set by the chart);
#  - the binary accepts each worker-image container's settings (args and env as rendered,
#    secrets replaced by placeholders): it does not exit 2 (invalid configuration);
#  - probes, grace period, security context, hooks, the PrometheusRule as the rules file.
# helm comes from scripts/bootstrap.sh ($WW_CACHE/bin/helm) or PATH.
# Usage: check_helm.sh <source dir> <wallet-worker binary>
set -euo pipefail
src="$1"
bin="$2"
chart="$src/deploy/helm/wallet-worker"
full="$src/tests/deploy/helm/values-full.yaml"
helm="${WW_CACHE:-$HOME/.cache/wallet-worker}/bin/helm"
[[ -x "$helm" ]] || helm=$(command -v helm || true)
[[ -n "$helm" && -x "$helm" ]] || { echo "FAIL: helm not found (scripts/bootstrap.sh builds it into \$WW_CACHE/bin)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export HELM_CACHE_HOME="$tmp/cache" HELM_CONFIG_HOME="$tmp/config" HELM_DATA_HOME="$tmp/data"

# helm logs a warning for files/wallet-worker-rules.yml, a link to deploy/prometheus (intended).
quiet() { grep -v 'found symbolic link in path' || true; }
"$helm" lint --strict "$chart" 2> >(quiet >&2)
"$helm" lint --strict "$chart" -f "$full" 2> >(quiet >&2)
"$helm" template ww "$chart" >"$tmp/default.yaml" 2> >(quiet >&2)
"$helm" template ww "$chart" -f "$full" >"$tmp/full.yaml" 2> >(quiet >&2)
echo "ok: helm lint --strict and helm template, default values and values-full.yaml"

"$bin" --help >"$tmp/help.txt"
python3 - "$bin" "$tmp/help.txt" "$chart/values.yaml" "$src/deploy/prometheus/wallet-worker-rules.yml" \
          "$tmp/default.yaml" "$tmp/full.yaml" <<'PY'
import base64, os, re, subprocess, sys, yaml

binary = sys.argv.pop(1)

help_text = open(sys.argv[1]).read()
settings = dict(re.findall(r"env ([A-Z][A-Z0-9_]*), default (.*)", help_text))
if len(settings) < 10:
    print(f"FAIL: found only {len(settings)} settings in --help"); sys.exit(1)
values = yaml.safe_load(open(sys.argv[2]))
rules = yaml.safe_load(open(sys.argv[3]))
bad = []
LOOPBACK = re.compile(r"(^|[/@,:])(localhost|127\.0\.0\.1|\[?::1\]?)([:/,]|$)")
CHART_SET = {"HTTP_ADDR", "PIPELINES", "KAFKA_GROUP_ID", "MONGODB_URI", "KAFKA_SASL_PASSWORD"}
REQUIRED = ("KAFKA_BROKERS", "MONGODB_URI", "HTTP_ADDR")

# every setting has a value in values.yaml, or is set by the chart itself
for name in sorted(settings):
    if name not in values["settings"] and name not in CHART_SET:
        bad.append(f"setting {name} has no value in values.yaml")
for name in values["settings"]:
    if name not in settings:
        bad.append(f"values.yaml settings.{name} is not a setting of wallet-worker --help")

to_run = []

def check(label, path, expect):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    secrets = {d["metadata"]["name"]: {**{k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()},
                                       **d.get("stringData", {})} for d in kinds.get("Secret", [])}
    pipelines = set()
    for d in kinds.get("Deployment", []) + kinds.get("Job", []):
        name = f'{label}: {d["kind"]} {d["metadata"]["name"]}'
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            if c["image"].startswith("apache/kafka"):
                continue                      # the topic Job runs Kafka's own tools
            env = c.get("env", [])
            names = [e["name"] for e in env]
            for n in names:
                if n not in settings:
                    bad.append(f"{name}: env {n} is not a setting wallet-worker --help knows")
            for n in set(names):
                if names.count(n) > 1:
                    bad.append(f"{name}: env {n} is set {names.count(n)} times")
            sc = c.get("securityContext", {})
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
                bad.append(f"{name}: root filesystem not read-only or privilege escalation allowed")
            if not (pod.get("securityContext", {}).get("runAsNonRoot") or sc.get("runAsNonRoot")):
                bad.append(f"{name}: not runAsNonRoot")
            if not c.get("resources", {}).get("requests"):
                bad.append(f"{name}: no resource requests")
            byname = {e["name"]: e for e in env}
            run_env = {}
            for e in env:
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if "value" in e:
                    run_env[e["name"]] = e["value"]
                elif ref and ref["name"] in secrets:
                    if ref["key"] in secrets[ref["name"]]:
                        run_env[e["name"]] = secrets[ref["name"]][ref["key"]]
                    elif not ref.get("optional"):
                        bad.append(f"{name}: env {e['name']} needs key {ref['key']} the chart's Secret lacks")
                elif ref:   # an operator's Secret: assume every key is there
                    run_env[e["name"]] = ("mongodb://db.invalid:27017/wallet"
                                          if e["name"] == "MONGODB_URI" else "placeholder")
            if run_env.get("HTTP_ADDR"):   # same host, an ephemeral port: never take 8080 here
                run_env["HTTP_ADDR"] = re.sub(r":[0-9]+$", ":0", run_env["HTTP_ADDR"])
            if run_env.get("KAFKA_SSL_CA_LOCATION"):   # a mounted file in the pod
                run_env["KAFKA_SSL_CA_LOCATION"] = "/etc/ssl/certs/ca-certificates.crt"
            to_run.append((name, c.get("args", []), run_env))
            if d["kind"] == "Job":
                if c.get("args") != ["migrate"]:
                    bad.append(f"{name}: a worker-image Job that is not `migrate`")
                hook = d["metadata"].get("annotations", {}).get("helm.sh/hook", "")
                if set(hook.split(",")) != {"pre-install", "pre-upgrade"}:
                    bad.append(f"{name}: not a pre-install,pre-upgrade hook ({hook!r})")
                required = ("MONGODB_URI",)
            else:
                required = REQUIRED
                pipelines.add(byname.get("PIPELINES", {}).get("value"))
                if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/livez":
                    bad.append(f"{name}: liveness probe is not /livez")
                if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                    bad.append(f"{name}: readiness probe is not /readyz")
                shutdown = int(byname.get("SHUTDOWN_TIMEOUT_MS", {}).get("value", 5000))
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if grace < 3 * shutdown / 1000 + 10:
                    bad.append(f"{name}: terminationGracePeriodSeconds {grace} < 3 x {shutdown} ms + 10 s")
                port = [p["containerPort"] for p in c["ports"] if p["name"] == "http"]
                if not port or not byname.get("HTTP_ADDR", {}).get("value", "").endswith(f":{port[0]}"):
                    bad.append(f"{name}: HTTP_ADDR does not listen on the http port")
            for r in required:
                e = byname.get(r)
                if e is None:
                    bad.append(f"{name}: required setting {r} is not set (the binary's default is localhost)")
                    continue
                v = e.get("value")
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] in secrets:
                    v = secrets[ref["name"]].get(ref["key"])
                    if v is None:
                        bad.append(f"{name}: {r} refers to a key the chart's Secret lacks")
                        continue
                elif ref:
                    continue                  # an existing Secret: the operator's value
                if LOOPBACK.search(v or ""):
                    bad.append(f"{name}: {r}={v!r} points at localhost")
    for kind in expect.get("kinds", []):
        if kind not in kinds:
            bad.append(f"{label}: no {kind} rendered")
    for kind in expect.get("absent", []):
        if kind in kinds:
            bad.append(f"{label}: {kind} rendered but it should be off")
    if pipelines != {"wallet", "invite"}:
        bad.append(f"{label}: Deployments run PIPELINES {sorted(map(str, pipelines))}, want wallet and invite")
    for d in kinds.get("PrometheusRule", []):
        if d["spec"] != rules:
            bad.append(f"{label}: the PrometheusRule differs from deploy/prometheus/wallet-worker-rules.yml")
    jobs = [j["metadata"]["name"] for j in kinds.get("Job", [])]
    print(f"ok: {label}: {', '.join(sorted(f'{k} x{len(v)}' for k, v in kinds.items()))}; jobs {jobs}")

check("default values", sys.argv[4],
      {"kinds": ["Deployment", "Service", "PodDisruptionBudget", "Job", "Secret", "NetworkPolicy"],
       "absent": ["PodMonitor", "PrometheusRule"]})
check("values-full.yaml", sys.argv[5],
      {"kinds": ["Deployment", "Service", "PodDisruptionBudget", "Job", "NetworkPolicy",
                 "PodMonitor", "PrometheusRule"], "absent": ["Secret"]})
# the topic Job is off by default
if "-topics" in open(sys.argv[4]).read():
    bad.append("default values: the topic Job is rendered but should be off by default")
# The configuration check runs first and synchronously (exit 2 at once when a setting is
# refused); a process still running after the bound below has passed it and is waiting
# for its (unreachable) servers.
procs = [(n, a, subprocess.Popen(["timeout", "-s", "TERM", "3", binary] + a,
                                 env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **e},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
         for n, a, e in to_run]
for n, a, p in procs:
    err = p.communicate()[1]
    if p.returncode == 2:
        bad.append(f"{n}: `wallet-worker {' '.join(a)}` refuses the chart's settings: "
                   f"{err.strip().splitlines()[-1] if err.strip() else ''}")
    else:
        print(f"ok: {n}: `wallet-worker {' '.join(a)}` accepts its settings")
for b in bad:
    print("FAIL: " + b)
if not bad:
    print(f"ok: every env var is one of {len(settings)} settings; required settings are explicit and not localhost")
sys.exit(1 if bad else 0)
PY
