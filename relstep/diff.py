"""`relstep diff`: what changed between two snapshots, read from their manifests and small files.

Nothing here prints and no dump or code file is opened: migrations come from
``migrations.json``, schema objects from each database's ``fingerprint`` in the manifest
(when the backup wrote one), rows from the manifests' row counts, code files from the
manifests' file lists and hashes, the environment from ``environment.json``.
:func:`compare` returns a :class:`Diff`; :func:`text` and :func:`markdown` render it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from relstep import lookup
from relstep.config import Config
from relstep.errors import InputError
from relstep.fsutil import human_bytes
from relstep.manifest import Manifest

MIGRATIONS_FILE = "migrations.json"
ENVIRONMENT_FILE = "environment.json"
CODE_PREFIX = "code/"


@dataclass
class Side:
    name: str
    version: str
    created_at: str | None
    size: int


@dataclass
class Changes:
    """Names added, removed and changed between two sides."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass
class RowChange:
    database: str
    table: str
    before: int | None
    after: int | None

    @property
    def delta(self) -> int:
        return (self.after or 0) - (self.before or 0)


@dataclass
class Diff:
    old: Side
    new: Side
    migrations: Changes
    schema: dict[str, Changes]                # per database
    schema_missing: list[str]                 # "no fingerprint in <snapshot> (database <db>)"
    rows: list[RowChange]
    code: dict[str, Changes]                  # per code entry
    environment: dict[str, tuple[Any, Any]]   # what -> (before, after)

    def to_json(self) -> dict[str, Any]:
        return {
            "old": asdict(self.old), "new": asdict(self.new),
            "size_delta": self.new.size - self.old.size,
            "migrations": asdict(self.migrations),
            "schema": {db: asdict(c) for db, c in self.schema.items()},
            "schema_missing": self.schema_missing,
            "rows": [{**asdict(r), "delta": r.delta} for r in self.rows],
            "code": {name: asdict(c) for name, c in self.code.items()},
            "environment": {what: {"before": b, "after": a} for what, (b, a) in self.environment.items()},
        }


# --- choosing the two snapshots -------------------------------------------------------------------


def choose(config: Config, old_ref: str | None, new_ref: str | None) -> tuple[Path, Path]:
    """(old, new): both given; one given -> it against the newest; none -> the one before the newest and it."""
    own = lookup.of_config(config).own
    if old_ref is not None:
        old = lookup.find(config, old_ref)
        if new_ref is not None:
            return old, lookup.find(config, new_ref)
        if not own:
            raise InputError(f"there is no snapshot in {config.backup_root}; run `relstep backup` first")
        return old, own[0].path
    if len(own) < 2:
        raise InputError(f"diff needs two snapshots of this app in {config.backup_root}, found {len(own)}; "
                         "name them (relstep diff A B) or back up again")
    return own[1].path, own[0].path


# --- comparing ------------------------------------------------------------------------------------


def _small_json(path: Path) -> dict[str, Any]:
    """A small JSON file of the snapshot (migrations, environment); {} when it is missing or unreadable."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _changes(before: dict[str, Any], after: dict[str, Any]) -> Changes:
    return Changes(added=sorted(set(after) - set(before)), removed=sorted(set(before) - set(after)),
                   changed=sorted(k for k in set(before) & set(after) if before[k] != after[k]))


def _migrations(old: Path, new: Path) -> Changes:
    def applied(snap: Path) -> dict[str, Any]:
        entries = _small_json(snap / MIGRATIONS_FILE).get("applied") or []
        return {str(m["name"]): m.get("checksum") for m in entries if isinstance(m, dict) and "name" in m}

    return _changes(applied(old), applied(new))


def _objects(fingerprint: Any) -> dict[str, Any] | None:
    """A fingerprint's schema objects as ``{"<kind> <name>": digest}`` (relstep.fingerprint's
    ``objects`` is kind -> name -> digest); None when the snapshot has none."""
    if not isinstance(fingerprint, dict):
        return None
    objects = fingerprint.get("objects")
    if not isinstance(objects, dict):
        return None
    flat: dict[str, Any] = {}
    for kind, names in objects.items():
        if isinstance(names, dict):
            flat.update({f"{kind} {name}": value for name, value in names.items()})
        else:
            flat[str(kind)] = names
    return flat


def _fingerprints(manifest: Manifest) -> dict[str, Any]:
    return {name: getattr(entry, "fingerprint", None) or (entry.model_extra or {}).get("fingerprint")
            for name, entry in (manifest.databases or {}).items()}


def _schema(old: Manifest, new: Manifest) -> tuple[dict[str, Changes], list[str]]:
    before, after = _fingerprints(old), _fingerprints(new)
    result, missing = {}, []
    for db in sorted(set(before) | set(after)):
        a, b = _objects(before.get(db)), _objects(after.get(db))
        if a is None or b is None:
            for side, objects in ((old, a), (new, b)):
                if objects is None:
                    missing.append(f"no fingerprint in {side.name or side.version} (database {db})")
            continue
        result[db] = _changes(a, b)
    return result, missing


def _row_counts(manifest: Manifest) -> dict[str, dict[str, int]]:
    if manifest.databases:
        return {name: dict(entry.row_counts) for name, entry in manifest.databases.items()}
    return {"main": dict(manifest.row_counts)}


def _rows(old: Manifest, new: Manifest) -> list[RowChange]:
    before, after = _row_counts(old), _row_counts(new)
    changes = []
    for db in sorted(set(before) | set(after)):
        a, b = before.get(db, {}), after.get(db, {})
        for table in sorted(set(a) | set(b)):
            if a.get(table) != b.get(table):
                changes.append(RowChange(db, table, a.get(table), b.get(table)))
    return changes


def _code_files(manifest: Manifest) -> dict[str, dict[str, str]]:
    """{code entry: {path inside it: sha256}} from the manifest's file list."""
    found: dict[str, dict[str, str]] = {name: {} for name in manifest.code}
    for rel, entry in manifest.files.items():
        if rel.startswith(CODE_PREFIX):
            name, _, inside = rel[len(CODE_PREFIX):].partition("/")
            if inside:
                found.setdefault(name, {})[inside] = entry.sha256
    for name, code in manifest.code.items():   # symlinks are not files, but they are code too
        found[name].update({f"{link} -> {target}": "link" for link, target in code.symlinks.items()})
    return found


def _code(old: Manifest, new: Manifest) -> dict[str, Changes]:
    before, after = _code_files(old), _code_files(new)
    result = {}
    for name in sorted(set(before) | set(after)):
        if changes := _changes(before.get(name, {}), after.get(name, {})):
            result[name] = changes
    return result


def _apps(value: Any) -> dict[str, Any] | None:
    """A process manager's list of apps (``pm2 jlist``: [{name, ...}]) as {name: version or status}."""
    if not isinstance(value, list) or not value or not all(isinstance(a, dict) and "name" in a for a in value):
        return None
    apps = {}
    for app in value:
        env: dict[str, Any] = app["pm2_env"] if isinstance(app.get("pm2_env"), dict) else {}
        apps[str(app["name"])] = app.get("version") or env.get("version") or env.get("status") or "present"
    return apps


def _environment_facts(env: dict[str, Any]) -> dict[str, Any]:
    """What describes the runtime, without what changes on every run (times, pids, the host's uptime)."""
    facts: dict[str, Any] = {}
    python: dict[str, Any] = env["python"] if isinstance(env.get("python"), dict) else {}
    facts["python"] = python.get("version")
    facts["relstep"] = env.get("relstep")
    os_facts: dict[str, Any] = env["os"] if isinstance(env.get("os"), dict) else {}
    facts["os"] = os_facts.get("release")
    for tool, version in (env.get("tools") or {}).items():
        facts[f"tool {tool}"] = version
    for name, run in (env.get("commands") or {}).items():
        if not isinstance(run, dict):
            continue
        apps = _apps(run.get("json"))
        if apps is not None:
            facts.update({f"{name} app {app}": version for app, version in apps.items()})
        elif "json" in run:
            facts[name] = json.dumps(run["json"], sort_keys=True)
        else:
            facts[name] = run.get("output") if run.get("status") == "ok" else f"({run.get('status')})"
    return facts


def _environment(old: Path, new: Path) -> dict[str, tuple[Any, Any]]:
    before = _environment_facts(_small_json(old / ENVIRONMENT_FILE))
    after = _environment_facts(_small_json(new / ENVIRONMENT_FILE))
    return {what: (before.get(what), after.get(what)) for what in sorted(set(before) | set(after))
            if before.get(what) != after.get(what)}


def _side(path: Path, manifest: Manifest) -> Side:
    return Side(path.name, manifest.version, manifest.created_at, manifest.size)


def compare(old: Path, new: Path) -> Diff:
    a, b = Manifest.load(old), Manifest.load(new)
    schema, missing = _schema(a, b)
    return Diff(old=_side(old, a), new=_side(new, b), migrations=_migrations(old, new), schema=schema,
                schema_missing=missing, rows=_rows(a, b), code=_code(a, b), environment=_environment(old, new))


# --- rendering ------------------------------------------------------------------------------------


def _signed(n: int) -> str:
    return f"+{n}" if n > 0 else str(n)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _sections(diff: Diff) -> list[tuple[str, list[str]]]:
    """(heading, lines) for each part; a part without changes says so in one line."""
    m = diff.migrations
    migrations = ([f"+ {n}" for n in m.added] + [f"- {n}" for n in m.removed]
                  + [f"~ {n} (checksum changed)" for n in m.changed]) or ["no change"]
    schema = [f"{sign} {db}: {obj}" for db, c in diff.schema.items()
              for sign, names in (("+", c.added), ("-", c.removed), ("~", c.changed)) for obj in names]
    schema = (schema or (["no change"] if diff.schema else [])) + diff.schema_missing
    rows = [f"{r.database}.{r.table}: {_count(r.before)} -> {_count(r.after)} ({_signed(r.delta)})"
            for r in diff.rows] or ["no change"]
    code = [f"{sign} {name}/{path}" for name, c in diff.code.items()
            for sign, paths in (("+", c.added), ("-", c.removed), ("~", c.changed)) for path in paths] or ["no change"]
    env = [f"{what}: {_shown(b)} -> {_shown(a)}" for what, (b, a) in diff.environment.items()] or ["no change"]
    size = [f"{diff.old.name}: {human_bytes(diff.old.size)} -> {diff.new.name}: {human_bytes(diff.new.size)} "
            f"({_signed(diff.new.size - diff.old.size)} bytes)"]
    return [("migrations", migrations), ("schema", schema), ("rows", rows), ("code", code),
            ("environment", env), ("size", size)]


def _shown(value: Any) -> str:
    return "(none)" if value is None else str(value)


def title(diff: Diff) -> str:
    return (f"changes since {diff.old.version} ({diff.old.name}) in {diff.new.version} ({diff.new.name})")


def text(diff: Diff) -> str:
    lines = [title(diff)]
    for heading, body in _sections(diff):
        lines.append(f"{heading}:")
        lines += [f"  {line}" for line in body]
    return "\n".join(lines)


def markdown(diff: Diff) -> str:
    lines = [f"### Changes since {diff.old.version}", "",
             f"`{diff.old.name}` ({diff.old.version}) -> `{diff.new.name}` ({diff.new.version})"]
    for heading, body in _sections(diff):
        lines += ["", f"**{heading}**", ""]
        lines += [f"- `{line}`" for line in body]
    return "\n".join(lines) + "\n"
