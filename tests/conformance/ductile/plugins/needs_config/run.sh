#!/bin/sh
cat >/dev/null
printf '{"status": "ok", "result": "configured"}\n'
