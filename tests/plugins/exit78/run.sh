#!/bin/sh
# exit78: exit code 78 means a permanent failure (never retried).
cat > /dev/null
echo "bad configuration, giving up" >&2
exit 78
