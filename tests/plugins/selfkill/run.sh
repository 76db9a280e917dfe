#!/bin/sh
# selfkill: SIGKILLs itself.
cat > /dev/null
kill -9 $$
