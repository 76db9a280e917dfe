#!/usr/bin/env python3
"""stateful: state.count + 1, returned as the result and as a state update."""

import json
import sys


def main() -> None:
    request = json.load(sys.stdin)
    count = int((request.get("state") or {}).get("count", 0)) + 1
    json.dump({"status": "ok", "result": {"count": count, "seen_state": request.get("state")},
               "state_updates": {"count": count}}, sys.stdout)


if __name__ == "__main__":
    main()
