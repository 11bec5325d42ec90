#!/usr/bin/env python3
"""Docs that agree with the binary: every setting, metric, exit status and dead-letter header
that docs/ (and README.md) name exists in the binary, and every one that exists is documented
where an operator looks for it.

Sources of truth:
  settings      `wallet-worker --help` (the "env NAME, default ..." lines)
  metrics       the metric names written as string literals in src/*.c (metrics.c registers
                and prints every family); a histogram's _bucket/_sum/_count series count too
  headers       the "ww.*" header names written as string literals in src/*.c
  exit statuses the "Exit status:" paragraph of `wallet-worker --help`, cross-checked with the
                statuses worker/main.c returns

Where each must be documented:
  settings      a row of the Settings table in docs/configuration.md (| `NAME` | `--flag` |...)
  metrics       a row of the table under "### `GET /metrics`" in docs/operations.md
  headers       a row of the table under "## Dead letters" in docs/contracts.md
  exit statuses a row of the table under "## Exit status" in docs/configuration.md

What counts as "named in the docs":
  metrics   every wallet_worker_... word
  headers   every ww.x.y word (ww.* is a wildcard, not a name)
  settings  every UPPER_CASE_WORD inside `code` or a fenced code block that is not a setting
            must be a name used elsewhere in this repository (the scripts' and tests'
            variables such as WW_STACK_DIR, C identifiers in src/, CMake options) or one of
            OTHER_NAMES below (names of other programs: sanitizer options, Kafka error names)
  exits     "exit N", "exits N", "exit status N", "exit code N", "exits with status N"
A section whose heading says it is a plan ("What remains", "Planned", "Not yet") may name
things the binary does not have yet.

Usage: check_docs.py <source dir> <wallet-worker binary>
"""
import glob
import os
import re
import subprocess
import sys

# Upper-case names in docs that are neither worker settings nor used by this repository's
# scripts, tests or sources: other programs' names. Add a name here only if it is one.
OTHER_NAMES = {
    "ASAN_OPTIONS", "UBSAN_OPTIONS",           # sanitizer runtime options
    "AWS_SESSION_TOKEN",                       # a libmongoc authMechanismProperties key
    "CGO_ENABLED",                             # Go build
    "PREEMPT_DYNAMIC",                         # uname -v of the benchmark machine
    "SASL_SSL",                                # Kafka's listener protocol name
    "RUN_SERIAL",                              # a ctest test property
    # librdkafka / Kafka error names
    "MSG_SIZE_TOO_LARGE", "COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE",
    "LEADER_NOT_AVAILABLE", "NOT_COORDINATOR", "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND", "NOT_LEADER_FOR_PARTITION", "REQUEST_TIMED_OUT",
}
PLAN_HEADING = re.compile(r"what remains|planned|not yet", re.I)
UPPER = re.compile(r"(?<![A-Za-z0-9_-])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?![A-Za-z0-9_])")
METRIC = re.compile(r"\bwallet_worker_[a-z0-9_]+")
HEADER = re.compile(r"(?<![A-Za-z0-9_.])ww(?:\.[a-z][a-z0-9_]*){2,}")
EXIT = re.compile(r"\bexit(?:s|ed)?\s+(?:with\s+)?(?:status\s+|code\s+)?[*`]*(\d+)\b", re.I)


def fail_list():
    problems = []

    def add(msg):
        problems.append(msg)
    return problems, add


def strip_c_comments(text):
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def truth(src, binary):
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        sys.exit(f"FAIL: cannot run {binary} --help: {e}")
    if out.returncode != 0:
        sys.exit(f"FAIL: {binary} --help exited {out.returncode}")
    help_text = out.stdout
    settings = set(re.findall(r"\benv ([A-Z][A-Z0-9_]+), default", help_text))
    if len(settings) < 10:
        sys.exit(f"FAIL: found only {len(settings)} settings in `{binary} --help` "
                 "(expected lines 'env NAME, default ...'); has its format changed?")
    m = re.search(r"^Exit status:(.*?)(?:\n(?=[A-Za-z])|\n\n|\Z)", help_text, re.S | re.M)
    if not m:
        sys.exit("FAIL: `wallet-worker --help` has no 'Exit status:' paragraph")
    exits = {int(x) for x in re.findall(r"\b(\d+) (?:after|on|from|when|if)\b", m.group(1))}

    c_sources = {p: strip_c_comments(read(p)) for p in sorted(glob.glob(os.path.join(src, "src", "*.c")))}
    metrics, headers = {}, {}
    for path, text in c_sources.items():
        rel = os.path.relpath(path, src)
        for name in re.findall(r'"((?:wallet_worker|process)_[a-z0-9_]+)', text):
            metrics.setdefault(name, rel)
        for name in re.findall(r'"(ww(?:\.[a-z][a-z0-9_]*){2,})"', text):
            headers.setdefault(name, rel)

    main_c = strip_c_comments(read(os.path.join(src, "worker", "main.c")))
    main_exits = set()
    for stmt in re.findall(r"\breturn\s+\d+\s*;|\bstatus\s*=[^;=][^;]*;|\*fatal\s*=\s*\d+\s*;", main_c):
        # numbers inside a call's arguments are not statuses: status = f(..., 60);
        stmt = re.sub(r"\w+\s*\((?:[^()]|\([^()]*\))*\)", "", stmt)
        main_exits |= {int(x) for x in re.findall(r"(?<![\w.])(\d+)(?![\w.])", stmt)}
    return settings, metrics, headers, exits, main_exits


def repo_names(src):
    """Upper-case words used by this repository's own scripts, tests, sources and build."""
    names = set()
    pats = ["scripts/*", "tests/**/*.sh", "tests/**/*.py", "tests/**/*.c", "tests/**/*.h",
            "tests/**/CMakeLists.txt", "src/*", "worker/*", "bench/*", "CMakeLists.txt",
            "Dockerfile", "docker-compose*.yml", "deploy/**/*"]
    me = os.path.abspath(__file__)
    for pat in pats:
        for p in glob.glob(os.path.join(src, pat), recursive=True):
            if not os.path.isfile(p) or os.path.abspath(p) == me:
                continue
            try:
                names |= set(UPPER.findall(read(p)))
            except UnicodeDecodeError:
                continue
    return names


def doc_lines(path):
    """(line number, text, in code, in a plan section) for each line; `code` spans are
    returned as the in-code text of prose lines."""
    fence = False
    plan = False
    for n, line in enumerate(read(path).splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence and line.startswith("#"):
            plan = bool(PLAN_HEADING.search(line))
        code = line if fence else " ".join(re.findall(r"`+([^`]+)`+", line))
        yield n, line, code, plan


def section(text, heading_re):
    """The text from the heading that matches to the next heading of the same or higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#+)\s", line)
        if m and re.search(heading_re, line):
            level = len(m.group(1))
            out = []
            for rest in lines[i + 1:]:
                m2 = re.match(r"(#+)\s", rest)
                if m2 and len(m2.group(1)) <= level:
                    break
                out.append(rest)
            return "\n".join(out)
    return None


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    src, binary = os.path.abspath(sys.argv[1]), sys.argv[2]
    settings, metrics, headers, exits, main_exits = truth(src, binary)
    others = repo_names(src) | OTHER_NAMES
    problems, add = fail_list()

    def known_metric(name):
        if name in metrics:
            return True
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        return base != name and base in metrics

    # ---- exit statuses: --help and worker/main.c agree
    for code in sorted(main_exits - exits):
        add(f"worker/main.c can exit with status {code}, but the 'Exit status:' paragraph of "
            f"`wallet-worker --help` does not name it: describe it there (worker/main.c usage())")

    # ---- named in the docs: must exist
    docs = sorted(glob.glob(os.path.join(src, "docs", "*.md"))) + [os.path.join(src, "README.md")]
    for path in docs:
        rel = os.path.relpath(path, src)
        for n, line, code, plan in doc_lines(path):
            where = f"{rel}:{n}"
            for name in METRIC.findall(line):
                if not known_metric(name) and not plan:
                    add(f"{where}: names metric {name}, which the worker does not export "
                        f"(no \"{name}\" in src/*.c): fix the name or remove it")
            for name in HEADER.findall(line):
                if name not in headers and not plan:
                    add(f"{where}: names dead-letter header {name}, which the worker never "
                        f"writes (no \"{name}\" in src/*.c): fix the name or remove it")
            for name in UPPER.findall(code):
                if name in settings or name in others or plan:
                    continue
                add(f"{where}: names {name}, which is not a setting (`wallet-worker --help` does "
                    f"not list it) nor a name used by this repository's scripts, tests or sources: "
                    f"fix the name, remove it, or (only if it is another program's name) add it "
                    f"to OTHER_NAMES in tests/docs/check_docs.py")
            for m in EXIT.finditer(line):
                code_n = int(m.group(1))
                if code_n not in exits and not plan:
                    add(f"{where}: says \"{m.group(0).strip()}\", but wallet-worker's exit "
                        f"statuses are {sorted(exits)} (`wallet-worker --help`): fix the status")

    # ---- exists: must be documented where an operator looks
    conf_path = "docs/configuration.md"
    conf = read(os.path.join(src, conf_path))
    settings_table = section(conf, r"^##\s+Settings\b") or ""
    for name in sorted(settings):
        if not re.search(rf"^\|\s*`{re.escape(name)}`\s*\|", settings_table, re.M):
            add(f"setting {name} (`wallet-worker --help`) is not documented: add a row "
                f"\"| `{name}` | `--flag` | `default` | allowed values | meaning |\" to the Settings "
                f"table of {conf_path}")
    for name in re.findall(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|", settings_table, re.M):
        if name not in settings:
            add(f"{conf_path}: the Settings table has a row for {name}, which `wallet-worker "
                f"--help` does not list: remove the row, or fix the name")
    exit_table = section(conf, r"^##\s+Exit status\b")
    if exit_table is None:
        add(f"{conf_path} has no '## Exit status' section")
    else:
        for code in sorted(exits):
            if not re.search(rf"^\|\s*`{code}`\s*\|", exit_table, re.M):
                add(f"exit status {code} (`wallet-worker --help`) is not documented: add a row "
                    f"\"| `{code}` | meaning |\" to the Exit status table of {conf_path}")

    ops_path = "docs/operations.md"
    metrics_table = section(read(os.path.join(src, ops_path)), r"^###\s+`GET /metrics`")
    if metrics_table is None:
        add(f"{ops_path} has no '### `GET /metrics`' section")
    else:
        for name in sorted(metrics):
            if not re.search(rf"^\|\s*`{re.escape(name)}(\{{[^}}`]*\}})?`\s*\|", metrics_table, re.M):
                add(f"metric {name} ({metrics[name]}) is not documented: add a row "
                    f"\"| `{name}{{labels}}` | counter/gauge/histogram | meaning |\" to the table "
                    f"under '### `GET /metrics`' in {ops_path}")

    contracts_path = "docs/contracts.md"
    dl = section(read(os.path.join(src, contracts_path)), r"^##\s+Dead letters\b")
    if dl is None:
        add(f"{contracts_path} has no '## Dead letters' section")
    else:
        rows = "\n".join(l for l in dl.splitlines() if l.startswith("|"))
        for name in sorted(headers):
            if f"`{name}`" not in rows:
                add(f"dead-letter header {name} ({headers[name]}) is not documented: add a row "
                    f"\"| `{name}` | value |\" to the header table under '## Dead letters' in "
                    f"{contracts_path}")

    if problems:
        for p in problems:
            print("FAIL:", p)
        print(f"{len(problems)} problem(s): the docs and the binary disagree.")
        return 1
    print(f"ok: {len(settings)} settings, {len(metrics)} metrics, {len(headers)} dead-letter "
          f"headers and exit statuses {sorted(exits)} agree with docs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
