#!/usr/bin/env python3
"""emitter: emits payload.count (default 2) events with dedupe keys."""

import json
import sys


def main() -> None:
    request = json.load(sys.stdin)
    payload = request.get("payload") or {}
    tag = payload.get("tag", "t")
    events = [
        {"type": "emitter.item", "payload": {"n": i, "tag": tag}, "dedupe_key": f"emitter-{tag}-{i}"}
        for i in range(int(payload.get("count", 2)))
    ]
    events.append({"type": "emitter.done", "payload": {"tag": tag}})
    json.dump({"status": "ok", "result": {"emitted": len(events)}, "events": events,
               "logs": [{"level": "info", "message": f"emitted {len(events)}"}]}, sys.stdout)


if __name__ == "__main__":
    main()
