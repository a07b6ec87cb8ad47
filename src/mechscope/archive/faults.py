"""Named fault-injection points for crash tests of the archive's writes.

A writer calls ``crash_point("record")`` between the steps of a write. When the environment holds
``MECHSCOPE_FAULT=record:N``, the N-th call of that name in the process ends it at once with
``os._exit`` (no cleanup, no rollback, no flushed buffers: what SIGKILL or a power cut leaves).
Without the variable a call costs one dictionary lookup. Names: ``record`` (``Archive.record``),
``import`` (``Archive.import_file``), ``migrate`` (creating or upgrading the schema).
"""

from __future__ import annotations

import os
from collections import Counter

EXIT_CODE = 86  # what a process ended by a fault exits with
_calls: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """End the process here if ``MECHSCOPE_FAULT`` names this call (``name:N``, N from 1)."""
    fault = os.environ.get("MECHSCOPE_FAULT")
    if not fault:
        return
    _calls[name] += 1
    where, _, n = fault.partition(":")
    if where == name and n.isdigit() and _calls[name] == int(n):
        os._exit(EXIT_CODE)
