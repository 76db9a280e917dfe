#!/bin/sh
# serial_recorder: the slow_recorder program under a manifest that says concurrency_safe: false.
exec python3 "$(dirname "$0")/../slow_recorder/run.py"
