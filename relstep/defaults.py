"""Defaults shared by the CLI and the core, in a module that imports nothing.

The CLI reads them while it builds its options (``relstep --help`` must stay fast), and the
core functions use the same names for their keyword defaults, so each value is written once.
"""

from __future__ import annotations

#: Seconds a command waits for another relstep holding the lock on the same backup_root.
DEFAULT_LOCK_TIMEOUT = 600.0
