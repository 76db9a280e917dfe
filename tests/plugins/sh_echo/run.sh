#!/bin/sh
# sh_echo: a protocol-2 plugin in plain POSIX shell. Reads the request from stdin and
# answers with the job id (extracted with sed) and the command.
request=$(cat)
job_id=$(printf '%s' "$request" | sed -n 's/.*"job_id": *"\([^"]*\)".*/\1/p')
command=$(printf '%s' "$request" | sed -n 's/.*"command": *"\([^"]*\)".*/\1/p')
printf '{"status": "ok", "result": {"job_id": "%s", "command": "%s", "shell": "sh"}, "logs": [{"level": "info", "message": "sh_echo %s"}]}\n' \
  "$job_id" "$command" "$command"
