"""Moved to ``mechscope.specimens.demo`` (this path stays an alias of it)."""

import sys

from .specimens import demo as _moved

sys.modules[__name__] = _moved
