#!/bin/sh
# sleeper: sleeps payload.seconds (default 30), writing "<shell pid> <sleep pid>" to
# payload.pid_file (if given) first, then answers ok.
request=$(cat)
seconds=$(printf '%s' "$request" | sed -n 's/.*"seconds": *\([0-9.]*\).*/\1/p')
pid_file=$(printf '%s' "$request" | sed -n 's/.*"pid_file": *"\([^"]*\)".*/\1/p')
sleep "${seconds:-30}" &
child=$!
if [ -n "$pid_file" ]; then
  echo "$$ $child" > "$pid_file.tmp" && mv "$pid_file.tmp" "$pid_file"
fi
wait "$child"
printf '{"status": "ok", "result": {"slept": "%s"}}\n' "${seconds:-30}"
