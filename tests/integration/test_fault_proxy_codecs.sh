#!/bin/sh
# The fault proxy's own check, in both wire encodings, against a kinesalite it starts.
exec /usr/bin/python3 "${KP_SOURCE_DIR:-$(dirname "$0")/../..}/tests/faults/check_codecs.py"
