#!/bin/sh
# stderr_exit1: complains on stderr and exits 1 with nothing on stdout.
cat > /dev/null
echo "starting up" >&2
echo "fatal: the frobnicator is out of flux" >&2
exit 1
