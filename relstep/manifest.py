"""MANIFEST.json as typed models: validated once on load, built by the backup, read by everyone else.

``Manifest.load(snapshot_dir)`` is the only way a manifest is read (list, show,
record, restore, verify, offsite, prune, doctor); ``Manifest.parse(data, where)``
reads one that is not on the local disk (an off-site copy).  Both raise
:class:`~relstep.errors.ManifestError`, one line, never a traceback:

* ``format`` newer than :data:`FORMAT` -> :class:`~relstep.errors.ManifestTooNew`,
  naming both numbers and saying to upgrade relstep;
* not JSON, not an object, a missing or wrongly typed field, a path that would
  leave the snapshot -> ``ManifestError`` naming the first problem.

Compatibility rules (docs/snapshot-layout.md):

* A new *optional* field is one line in a model (with a default), and does not
  raise ``format``: snapshots written before it still load, and an older relstep
  of the same format keeps it, untouched, as an unknown field.
* Unknown fields are kept (``extra="allow"``) at the top level, in database and in
  code entries: they describe the snapshot, and nothing an older relstep does
  with the snapshot depends on them.
* Entries of ``files`` refuse unknown fields: they are what verify, restore and
  offsite trust for integrity, and an unknown key there (a codec, encryption)
  could change how the bytes must be read.  A change that an older relstep must
  not ignore raises ``format``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_serializer,
)

from relstep.errors import InputError, ManifestError, ManifestTooNew

FILENAME = "MANIFEST.json"
# Raised only for changes an older relstep must not ignore; see the module docstring.
FORMAT = 1


def is_safe_relative(rel: object) -> bool:
    """A manifest path that stays inside the snapshot: relative, no '..', '.' or empty parts, no NUL.

    The manifest itself is not covered by a checksum, so a path read from it is
    checked before relstep opens, restores or chmods anything through it.  Plain
    string tests: this runs once per file of the snapshot.
    """
    if not isinstance(rel, str) or not rel or rel[0] == "/" or "\0" in rel:
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def _safe(rel: str) -> str:
    if not is_safe_relative(rel):
        raise ValueError(f"unsafe path {rel!r}")
    return rel


def _aware_instant(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return value


NonEmpty = Annotated[str, StringConstraints(min_length=1)]
SafePath = Annotated[str, AfterValidator(_safe)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Instant = Annotated[str, AfterValidator(_aware_instant)]


class _Described(BaseModel):
    """Unknown fields are kept: see the module docstring.

    Reading is strict (``parse``: "6" is not a size); building one in the backup is not,
    so an engine's tuple of tables is as good as a list.
    """

    model_config = ConfigDict(extra="allow", frozen=True)


class FileEntry(BaseModel):
    """One file's size and SHA-256, as written; verify, restore and offsite compare against them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(ge=0)
    sha256: Sha256
    # Encrypted files (docs/encryption.md): size and sha256 are the ciphertext's, this the plaintext's.
    plain_sha256: Sha256 | None = None

    @model_serializer(mode="wrap")
    def _without_absent(self, handler: Any) -> Any:
        # A plain file's entry stays {size, sha256}, as older relsteps (extra="forbid") expect.
        data = handler(self)
        if isinstance(data, dict) and data.get("plain_sha256") is None:
            data.pop("plain_sha256", None)
        return data


class DatabaseEntry(_Described):
    engine: NonEmpty
    path: SafePath
    url: str | None = None                          # password replaced by ***
    format: str | None = None
    tool: str | None = None
    server_version: str | None = None
    row_counts: dict[str, int] = {}
    row_counts_consistent: bool = True
    redacted: dict[str, list[str]] = {}
    excluded_tables: list[str] = []
    files: list[str] = []
    extra: dict[str, Any] | None = None             # what the dump left out (the engine reads it on restore)
    # What every restore is proven against (relstep.fingerprint); None: made before fingerprints.
    fingerprint: dict[str, Any] | None = None


class CodeEntry(_Described):
    source: str | None = None
    files: int = 0
    bytes: int = 0
    linked: int = 0
    symlinks: dict[SafePath, str] = {}
    executables: list[SafePath] = []
    # What code capture deliberately did not copy (databases, snapshots): [{path, reason}].
    left_out: list[dict[str, str]] = []
    # Names and link targets that are not valid UTF-8: stored path -> the original bytes, base64.
    raw_names: dict[SafePath, str] = {}
    raw_link_targets: dict[SafePath, str] = {}


class EncryptionEntry(_Described):
    """How the snapshot's data files are encrypted; the recipients' public keys, never a secret."""

    scheme: str = "age"
    recipients: list[str]
    # True: an off-site copy encrypted on the way up (encryption.offsite_only) of a plain local
    # snapshot; it also holds that snapshot's manifest, encrypted (relstep.offsite_crypt).
    offsite_only: bool = False


class Manifest(_Described):
    format: int = Field(default=FORMAT, ge=1)
    name: str | None = None
    version: NonEmpty
    deployment_type: NonEmpty
    created_at: Instant | None = None               # the creation time retention orders by
    relstep_version: str | None = None
    # The app the snapshot belongs to (relstep.identity); None: written before projects existed.
    project: str | None = None
    git_commit: str | None = None
    git_tags: list[str] = []
    # engine and row_counts describe the first database, as they did before `databases` existed.
    engine: str | None = None
    row_counts: dict[str, int] = {}
    schema_revision: str | None = None
    migration_tool: str | None = None
    databases: dict[str, DatabaseEntry] | None = None
    code: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")], CodeEntry] = {}
    files: dict[SafePath, FileEntry]                # every file but the manifest: what verify checks
    encryption: EncryptionEntry | None = None       # None: the data files are plain

    # --- reading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, snapshot_dir: Path) -> Manifest:
        """The manifest of a snapshot folder; InputError when there is none, ManifestError when it is bad."""
        where = snapshot_dir / FILENAME
        try:
            data = where.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{snapshot_dir} is not a relstep snapshot (no {FILENAME})") from None
        except OSError as exc:
            raise ManifestError(f"cannot read {where}: {exc.strerror or exc}") from exc
        return cls.parse(data, str(where))

    @classmethod
    def parse(cls, data: bytes | str, where: str) -> Manifest:
        try:
            raw = json.loads(data)
        except ValueError as exc:   # JSONDecodeError and UnicodeDecodeError
            raise ManifestError(f"cannot read {where}: it is not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ManifestError(f"{where} is not a relstep manifest: it is not a JSON object")
        found = raw.get("format", FORMAT)
        if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT:
            from relstep import __version__

            raise ManifestTooNew(
                f"{where} is manifest format {found}, but this relstep ({__version__}) reads format {FORMAT} "
                "at most; upgrade relstep to read this snapshot"
            )
        try:
            return cls.model_validate(raw, strict=True)
        except ValidationError as exc:
            raise ManifestError(f"{where} is not a relstep manifest: {_first_problem(exc)}") from None

    # --- writing ------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"

    # --- what readers ask -----------------------------------------------------------------------

    @property
    def created(self) -> datetime | None:
        return datetime.fromisoformat(self.created_at) if self.created_at else None

    @property
    def size(self) -> int:
        """Bytes of every file but the manifest, as written."""
        return sum(f.size for f in self.files.values())


def _first_problem(exc: ValidationError) -> str:
    """The first validation error as a few words: ``it has no version``, ``files is not a mapping``."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if loc and loc[-1] == "[key]":   # a mapping's key: files' paths, code names
        return f"{'.'.join(loc[:-2])} lists an {message}"
    where = ".".join(loc) or "it"
    kind = error["type"]
    shapes = {"dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
              "list_type": "a list", "string_type": "a string", "int_type": "an integer",
              "bool_type": "true or false"}
    if kind == "missing":
        parent, _, key = where.rpartition(".")
        return f"{parent + ' ' if parent else 'it '}has no {key}"
    if kind in shapes:
        return f"{where} is not {shapes[kind]}"
    if kind == "extra_forbidden":
        return f"{where} is not a field relstep knows"
    return f"{where}: {message}"
