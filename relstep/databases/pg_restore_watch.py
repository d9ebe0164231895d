"""What ``pg_restore --verbose`` says while it loads in parallel, as events a restore can act on.

Two moments matter to ``postgres_restore``: the tables exist (the leader has run the pre-data
section and enters its parallel loop: relstep may now load the redacted tables beside it), and a
table's rows are committed (its ``TABLE DATA`` item is finished: relstep may read it back for the
proof while the other tables still load).  Both come from the tool's own progress lines, read as
they arrive; a line that is not recognised (another version's wording) only means the events come
later: "tables exist" at the end of the run, and every table is read back after it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

# Progress lines are English whatever the locale, so that they can be recognised.
ENV = {"LC_ALL": "C"}

_PARALLEL_LOOP = "pg_restore: entering main parallel loop"
# pg_restore's leader logs this once the worker has committed the item's transaction.
_TABLE_DATA_DONE = re.compile(r"^pg_restore: finished item \d+ TABLE DATA (?P<tag>.+)$")


class LoadWatch:
    """Fed every stderr line of one ``pg_restore --verbose --jobs`` run (``line``, on its reader thread)."""

    def __init__(self) -> None:
        self.tables_created = threading.Event()   # also set at the end of the output: nothing more will come
        self.loading = False                      # the parallel loop began: the tables exist, rows are loading
        self._lock = threading.Lock()
        self._loaded: list[str] = []
        self._on_loaded: Callable[[str], None] | None = None

    def line(self, text: str) -> None:
        if text == "" or text == _PARALLEL_LOOP:
            self.loading = self.loading or bool(text)
            self.tables_created.set()
            return
        match = _TABLE_DATA_DONE.match(text)
        if match is None:
            return
        with self._lock:
            callback = self._on_loaded
            if callback is None:
                self._loaded.append(match.group("tag"))
        if callback is not None:
            callback(match.group("tag"))

    def on_table_loaded(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(table name)`` for each table whose rows are committed: at once for those
        already loaded, then as each finishes (on the reader thread).  The name is the bare table name,
        without its schema, as pg_restore prints it."""
        with self._lock:
            self._on_loaded = callback
            earlier, self._loaded = self._loaded, []
        for tag in earlier:
            callback(tag)
