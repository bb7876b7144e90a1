import os
import sys

SDK = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if SDK not in sys.path:
    sys.path.insert(0, SDK)
