# The bundled plugins' own tests (pytest plugins/): the SDK from this
# checkout, and the greffon binary from $GREFFON_BIN (scripts/test sets it).
import os
import sys

SDK = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "python"))
if SDK not in sys.path:
    sys.path.insert(0, SDK)
