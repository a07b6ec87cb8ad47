"""Moved to ``mechscope.circuits.scrubbing`` (this path stays an alias of it)."""

import sys

from .circuits import scrubbing as _moved

sys.modules[__name__] = _moved
