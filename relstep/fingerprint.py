"""A database's fingerprint: what the proof after a restore compares, engine-neutral.

Each engine reads its own catalog (``databases/pg_fingerprint.py``, ``mysql_fingerprint.py``,
``sqlite_fingerprint.py``) and fills one ``Fingerprint``:

* ``objects``: kind -> object name -> digest of the object's normalized description (its
  definition as the catalog renders it, without OIDs or the database's own name).  Privileges
  are objects of their own (kind ``grant``, one per privilege, grantee and object), so a lost
  GRANT is named rather than folded into a table's digest.
* ``values``: kind -> object name -> a value worth printing when it differs (a sequence's
  current value, a table's AUTO_INCREMENT, an owner, SQLite's ``journal_mode``).  Values are
  kept out of the objects' digests, so a difference reads ``sequence s: value 17 != 42``.
* ``content``: table -> rows and a digest of the rows as the dump holds them (redacted columns
  with their redacted values, excluded tables empty).  The digest is order-independent: the sum
  of a 64-bit hash of each row's text, so the engines need no canonical order and a table is
  read in one sequential scan.

``compare`` names every difference; ``summary`` says what an equal comparison covered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1

# Kinds that read better with their own plural or in a fixed order in summaries.
_PLURALS = {"index": "indexes", "policy": "policies", "statistics": "statistics", "large object": "large objects",
            "default privilege": "default privileges", "auto_increment": "auto_increment values",
            "setting": "settings"}
_SUMMARY_ORDER = ("schema", "table", "view", "materialized view", "sequence", "index", "constraint", "grant", "revoke",
                  "default privilege", "function", "procedure", "aggregate", "trigger", "rule", "policy", "event",
                  "event trigger", "enum", "domain", "type", "extension", "comment", "owner", "large object")


def plural(kind: str, count: int) -> str:
    return kind if count == 1 else _PLURALS.get(kind, kind + "s")


def digest(*parts: Any) -> str:
    """A short stable digest of JSON-serializable parts (128 bits: collisions are not a concern)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TableContent:
    rows: int
    digest: str   # hex of the sum of the rows' 64-bit hashes (engine-defined row text)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "digest": self.digest}


@dataclass
class Fingerprint:
    engine: str
    objects: dict[str, dict[str, str]] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    content: dict[str, TableContent] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # what could not be read, and so is not covered

    def add(self, kind: str, name: str, *description: Any, value: Any = None) -> None:
        """Record one object; ``value`` (when given) is compared and printed on its own."""
        self.objects.setdefault(kind, {})[name] = digest(kind, *description)
        if value is not None:
            self.values.setdefault(kind, {})[name] = str(value)

    @property
    def counts(self) -> dict[str, int]:
        return {kind: len(names) for kind, names in sorted(self.objects.items())}

    @property
    def total(self) -> str:
        return digest(self.objects, self.values, {t: c.to_json() for t, c in self.content.items()})

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "engine": self.engine,
            "total": self.total,
            "counts": self.counts,
            "objects": {kind: dict(sorted(names.items())) for kind, names in sorted(self.objects.items())},
            "values": {kind: dict(sorted(names.items())) for kind, names in sorted(self.values.items())},
            "content": {table: c.to_json() for table, c in sorted(self.content.items())},
            **({"notes": self.notes} if self.notes else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fingerprint:
        """Read a manifest's fingerprint; ValueError when it is not one this relstep understands."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"fingerprint format {data.get('format') if isinstance(data, Mapping) else data!r} "
                             f"is not {FORMAT}; use a newer relstep")
        try:
            return cls(
                engine=str(data["engine"]),
                objects={str(k): {str(n): str(d) for n, d in v.items()} for k, v in data.get("objects", {}).items()},
                values={str(k): {str(n): str(d) for n, d in v.items()} for k, v in data.get("values", {}).items()},
                content={str(t): TableContent(int(c["rows"]), str(c["digest"]))
                         for t, c in data.get("content", {}).items()},
                notes=[str(n) for n in data.get("notes", [])],
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"the fingerprint is malformed: {exc}") from exc


class RowDigest:
    """The order-independent content digest of one table: the sum of its rows' 64-bit hashes."""

    def __init__(self) -> None:
        self.rows = 0
        self.total = 0

    def add(self, row_hash: int) -> None:
        self.rows += 1
        self.total += row_hash

    def result(self) -> TableContent:
        return content_of(self.rows, self.total)


def content_of(rows: int, hash_sum: int | str, method: str = "") -> TableContent:
    """A table's content from its row count and the (exact, unbounded) sum of its rows' hashes;
    ``method`` (an engine's name for how rows were hashed, when it has several) prefixes the digest."""
    return TableContent(rows, (f"{method}:" if method else "") + format(int(hash_sum) % (1 << 128), "032x"))


# --------------------------------------------------------------------------- comparison


def compare(expected: Fingerprint, actual: Fingerprint, skip_kinds: Iterable[str] = ()) -> list[str]:
    """Every difference of ``actual`` (the restored database) from ``expected`` (the snapshot's), named."""
    skip = set(skip_kinds)
    found: list[str] = []
    for kind in sorted((expected.objects.keys() | actual.objects.keys()) - skip):
        want, have = expected.objects.get(kind, {}), actual.objects.get(kind, {})
        if kind == "large object" and len(want) != len(have):
            found.append(f"large objects: {len(have)} != {len(want)}")
        for name in sorted(want.keys() | have.keys()):
            if kind == "owner" and (name not in have or name not in want):
                continue  # an owner comes and goes with its object, which is named under its own kind
            if name not in have:
                if kind != "large object" or len(want) == len(have):
                    found.append(f"{kind} {name} missing")
            elif name not in want:
                if kind != "large object" or len(want) == len(have):
                    found.append(f"{kind} {name} not in the snapshot")
            elif want[name] != have[name]:
                what = "content" if kind == "large object" else "definition"
                found.append(f"{kind} {name}: {what} differs")
    for kind in sorted((expected.values.keys() | actual.values.keys()) - skip):
        want, have = expected.values.get(kind, {}), actual.values.get(kind, {})
        for name in sorted(want.keys() & have.keys()):
            if want[name] != have[name]:
                found.append(f"{kind} {name}: value {have[name]} != {want[name]}")
    for table in sorted(expected.content.keys() | actual.content.keys()):
        want_c, have_c = expected.content.get(table), actual.content.get(table)
        if want_c is None:
            found.append(f"table {table}: rows not in the snapshot")
        elif have_c is None:
            found.append(f"table {table}: content missing")
        elif have_c.rows != want_c.rows:
            found.append(f"table {table}: content differs ({have_c.rows} rows, the snapshot has {want_c.rows})")
        elif have_c.digest != want_c.digest:
            found.append(f"table {table}: content differs")
    return found


# What the data says rather than the schema: left out when a live schema is checked for drift.
_DATA_KINDS = ("large object",)
_DATA_VALUES = ("sequence", "auto_increment")


def schema_only(fingerprint: Fingerprint) -> Fingerprint:
    """The fingerprint without rows, counters and large objects: what migrations decide."""
    return Fingerprint(
        engine=fingerprint.engine,
        objects={k: v for k, v in fingerprint.objects.items() if k not in _DATA_KINDS},
        values={k: v for k, v in fingerprint.values.items() if k not in _DATA_VALUES},
    )


def drift(reference: Fingerprint, live: Fingerprint, skip_kinds: Iterable[str] = ()) -> list[str]:
    """Schema objects of ``live`` that differ from ``reference`` (a snapshot taken at the same migrations)."""
    return compare(schema_only(reference), schema_only(live), skip_kinds)


def summary(fingerprint: Fingerprint, skip_kinds: Iterable[str] = ()) -> str:
    """What an equal comparison covered: ``21 tables (content), 13 sequences, 44 indexes, ...``."""
    skip = set(skip_kinds)
    counts = {k: v for k, v in fingerprint.counts.items() if k not in skip and v}
    ordered = [k for k in _SUMMARY_ORDER if k in counts] + sorted(k for k in counts if k not in _SUMMARY_ORDER)
    parts = []
    for kind in ordered:
        text = f"{counts[kind]} {plural(kind, counts[kind])}"
        if kind == "table" and fingerprint.content:
            text += " (content)"
        parts.append(text)
    if "table" not in counts and fingerprint.content:
        parts.insert(0, f"{len(fingerprint.content)} {plural('table', len(fingerprint.content))} (content)")
    return ", ".join(parts) or "no objects"
