"""pg_restore's progress lines as events: what the staged restore may start, and when (no server:
the lines are pg_restore 15's own wording; tests/databases/test_readback_postgres.py runs the tool)."""

from __future__ import annotations

import pytest

from relstep.databases.pg_restore_watch import LoadWatch

pytestmark = pytest.mark.unit


def test_the_end_of_a_run_that_never_began_loading_wakes_the_waiter_but_says_nothing_is_loading() -> None:
    """A pg_restore that fails in pre-data ends its output without the parallel loop: the restore must
    not start copying the redacted tables into tables that may not exist (it reports pg_restore's error)."""
    watch = LoadWatch()
    watch.line("pg_restore: creating TABLE \"public.t\"")
    watch.line("pg_restore: error: could not execute query: ERROR:  role \"app\" does not exist")
    watch.line("")
    assert watch.tables_created.is_set() and not watch.loading


def test_tables_finished_before_anyone_listened_are_reported_then_the_rest_as_they_come() -> None:
    watch = LoadWatch()
    watch.line("pg_restore: entering main parallel loop")
    watch.line("pg_restore: finished item 3369 TABLE DATA documents")
    watch.line("pg_restore: finished item 3218 CONSTRAINT documents documents_pkey")
    watch.line("pg_restore: finished item 3370 TABLE DATA table with spaces")
    seen: list[str] = []
    watch.on_table_loaded(seen.append)
    assert seen == ["documents", "table with spaces"]
    watch.line("pg_restore: launching item 3371 TABLE DATA events")
    watch.line("pg_restore: finished item 3371 TABLE DATA events")
    assert seen == ["documents", "table with spaces", "events"]
    assert watch.loading
