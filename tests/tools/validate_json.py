#!/usr/bin/env python3
"""Validates JSON documents (one per line, NDJSON) against a JSON Schema
(draft 2020-12). Usage: validate_json.py SCHEMA FILE. Exit 0 when every line
is valid, 1 otherwise (each failure printed with its line number)."""
import json
import sys

try:
    from jsonschema import Draft202012Validator, FormatChecker
except ImportError:
    sys.exit("validate_json.py: python3-jsonschema is missing (scripts/bootstrap.sh installs it)")

schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema, format_checker=FormatChecker())
bad = 0
count = 0
for no, line in enumerate(open(sys.argv[2]), 1):
    if not line.strip():
        continue
    count += 1
    for err in validator.iter_errors(json.loads(line)):
        bad += 1
        print(f"{sys.argv[2]}:{no}: {err.message} at {list(err.absolute_path)}")
print(f"{count} document(s), {bad} error(s)")
sys.exit(1 if bad or count == 0 else 0)
