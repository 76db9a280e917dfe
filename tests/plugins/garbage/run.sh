#!/bin/sh
# garbage: answers with something that is not JSON.
cat > /dev/null
echo "this is definitely not JSON <html>"
