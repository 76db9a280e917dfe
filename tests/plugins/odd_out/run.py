#!/usr/bin/env python3
"""odd_out: writes what payload.kind names on stdout — invalid UTF-8, deep JSON, huge integers, NUL."""

import json
import sys

request = json.load(sys.stdin)
kind = (request.get("payload") or {}).get("kind")
out = sys.stdout.buffer
if kind == "invalid_utf8":
    out.write(b'{"status": "ok", "result": "\xff\xfe"}')
elif kind == "deep":
    out.write(b'{"status": "ok", "result": ' + b"[" * 300 + b"]" * 300 + b"}")
elif kind == "bigint":
    out.write(b'{"status": "ok", "result": 123456789012345678901234567890}')
elif kind == "nul":
    out.write(
        b'{"status": "ok", "result": {"k\\u0000": "v\\u0000"}, "logs": [{"level": "info", "message": "m\\u0000"}]}'
    )
    sys.stderr.write("err\x00or\n")
else:
    out.write(b'{"status": "ok", "result": "plain"}')
