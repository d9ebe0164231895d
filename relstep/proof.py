"""The proof after a restore: the restored database against the snapshot's recorded fingerprint.

Shared by ``verify --restore-test`` (into a scratch database) and ``restore`` (into the target).
Snapshots made before fingerprints existed carry none: they are compared by row counts, and the
proof says so.  Returns data; the callers decide the exit code and the wording around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relstep.fingerprint import Fingerprint, TableContent, compare, plural, summary

if TYPE_CHECKING:
    from relstep.databases.base import Engine
    from relstep.manifest import DatabaseEntry

FINGERPRINT = "fingerprint"
ROW_COUNTS = "row counts"


@dataclass
class Proof:
    method: str                  # FINGERPRINT or ROW_COUNTS
    compared: str                # what an equal result covered ("21 tables (content), 13 sequences, ...")
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences

    def sentence(self) -> str:
        if self.ok:
            return f"restored database equals the snapshot: {self.compared}"
        shown = "; ".join(self.differences[:5])
        more = len(self.differences) - 5
        return f"differs: {shown}" + (f" and {more} more" if more > 0 else "")

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "ok": self.ok, "compared": self.compared, "differences": self.differences,
                "notes": self.notes}


# Kinds a restore leaves out when told to (``--no-owner``, ``--no-privileges``), for ``left_out``.
NO_OWNER = {"owner": "--no-owner gave every object to the restoring role"}
NO_PRIVILEGES = {kind: "--no-privileges left them out" for kind in ("grant", "revoke", "default privilege")}


def prove(engine: Engine, entry: DatabaseEntry, url: str, *, same_database: bool,
          left_out: Mapping[str, str] | None = None, named_like_the_snapshot: str | None = None,
          content: Mapping[str, TableContent] | None = None) -> Proof:
    """Compare the database at ``url`` with the manifest ``entry`` it was restored from.

    ``same_database``: ``url`` is the snapshot's own database, so what the engine keeps outside the
    dump (MariaDB's grants, SQLite's journal mode) is compared too.
    ``left_out``: kinds the restore was told to leave out -> why (``NO_OWNER``, ``NO_PRIVILEGES``);
    they are not compared, and a note says so.
    ``named_like_the_snapshot``: the URL of the database the restore will replace, when it has the
    snapshot's database name and ``url`` (a staged copy) has another: what the server keeps under
    that name (the engine's ``FINGERPRINT_KEPT_BY_NAME``: MariaDB's grants), which a load neither
    brings nor removes, is compared there before anything is replaced.
    ``content``: every table's content digest, already read back from ``url`` by the restore while it
    loaded (PostgreSQL), made the way the recorded ones were: only the schema is read here.
    Raises the engine's error when the database cannot be read; ValueError for a fingerprint this
    relstep cannot read.
    """
    consistent = entry.row_counts_consistent
    recorded = entry.fingerprint
    if recorded is None:
        return _by_row_counts(engine, entry, url, consistent)
    expected = Fingerprint.from_json(recorded)
    actual = engine.fingerprint(url, content=content is None, like=expected)
    if content is not None:
        actual.content = dict(content)
    outside: dict[str, str] = {} if same_database else dict(getattr(engine, "FINGERPRINT_OUTSIDE_DUMP", {}))
    outside.update(left_out or {})
    differences = compare(expected, actual, outside)
    by_name = [k for k in getattr(engine, "FINGERPRINT_KEPT_BY_NAME", ()) if k in outside and k not in (left_out or {})]
    if named_like_the_snapshot is not None and not same_database and by_name:
        there = engine.fingerprint(named_like_the_snapshot, content=False)
        differences += compare(_only(expected, by_name), _only(there, by_name))
        for kind in by_name:
            del outside[kind]
    proof = Proof(FINGERPRINT, summary(expected, outside), differences, tables=len(actual.content))
    proof.notes += expected.notes
    proof.notes += [f"not compared: {plural(kind, 2)} ({why})" + ("" if kind in (left_out or {}) else
                                                                   ", since this restore went into another database")
                    for kind, why in outside.items() if expected.objects.get(kind)]
    if not consistent:
        # Rows were not read at the dump's instant (see row_counts_consistent): content may differ.
        differing = [d for d in proof.differences if d.startswith("table ") and ": content" in d]
        proof.differences = [d for d in proof.differences if d not in differing]
        if differing:
            proof.notes.append("content differs but was not read at the dump's instant: " + "; ".join(differing))
    return proof


def _only(fingerprint: Fingerprint, kinds: list[str]) -> Fingerprint:
    """The objects of ``kinds`` alone (no content, no other kind)."""
    return Fingerprint(engine=fingerprint.engine, objects={k: v for k, v in fingerprint.objects.items() if k in kinds},
                       values={k: v for k, v in fingerprint.values.items() if k in kinds})


def _by_row_counts(engine: Engine, entry: DatabaseEntry, url: str, consistent: bool) -> Proof:
    actual = engine.row_counts(url)
    notes = ["the snapshot has no fingerprint (made by an older relstep): only row counts were compared"]
    differences = row_count_differences(entry.row_counts, actual)
    if differences and not consistent:
        notes.append("row counts differ but were not taken at the dump's instant: " + "; ".join(differences))
        differences = []
    return Proof(ROW_COUNTS, f"{len(actual)} tables (row counts)", differences, notes, tables=len(actual))


def row_count_differences(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """Tables missing from, extra in, or with other counts than ``expected`` (the manifest's)."""
    differences = []
    for table in sorted(expected.keys() | actual.keys()):
        if table not in actual:
            differences.append(f"rows {table}: missing after the restore")
        elif table not in expected:
            differences.append(f"rows {table}: restored but not in the manifest")
        elif actual[table] != expected[table]:
            differences.append(f"rows {table}: {actual[table]} rows, the manifest says {expected[table]}")
    return differences
