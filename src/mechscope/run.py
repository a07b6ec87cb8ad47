"""Moved to ``mechscope.models.run`` (this path stays an alias of it)."""

import sys

from .models import run as _moved

sys.modules[__name__] = _moved
