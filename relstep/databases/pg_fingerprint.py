"""PostgreSQL's fingerprint: the catalog, normalized, and every table's rows, read in one snapshot.

``read`` runs on the connection the dump holds (the exported snapshot ``pg_dump`` shares), so the
fingerprint describes exactly the instant the dump does; after a restore it runs on the restored
database.  Names are schema-qualified and rendered by the server's own functions
(``pg_get_indexdef``, ``pg_get_constraintdef``, ``pg_get_functiondef``, ``pg_describe_object``...),
which print no OIDs; the database's name appears nowhere.  Privileges come from ``aclexplode`` of
each object's ACL, a NULL ACL read as the owner's default (what it means), so an explicit grant
of exactly the default compares equal to none.  The grantor is left out: a restore run by another
role records itself as grantor without changing who may do what.

Content: ``count(*)`` and the sum of a 64-bit hash of each row (see ``_ROW_HASHES``) over each table, in one
sequential scan per table and no sort.  Row text depends on a few settings, so they are fixed
(``SET LOCAL`` inside a savepoint that is rolled back, leaving the dump's transaction as it was).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from relstep.fingerprint import Fingerprint, content_of

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

NAME = "postgresql"

# Row text (and so the content digest) must not depend on the session's or role's settings.
_ROW_TEXT_SETTINGS = ("SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; "
                      "SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'")

_USER_NS = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"


def _not_extension_member(catalog: str, oid: str) -> str:
    return (f"NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
            f"AND d.objid = {oid} AND d.deptype = 'e')")


_GRANTEE = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"

_SCHEMAS = f"""
SELECT n.nspname, pg_get_userbyid(n.nspowner) FROM pg_namespace n
WHERE {_USER_NS} AND {_not_extension_member('pg_namespace', 'n.oid')}
"""

_RELATIONS = f"""
SELECT c.relkind, format('%I.%I', n.nspname, c.relname), pg_get_userbyid(c.relowner), c.relpersistence,
       c.reloptions, c.relrowsecurity, c.relforcerowsecurity,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
       ARRAY(SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid ORDER BY i.inhseqno),
       ARRAY(SELECT json_build_array(a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                                     pg_get_expr(ad.adbin, ad.adrelid), a.attgenerated, a.attidentity,
                                     CASE WHEN a.attcollation <> t.typcollation THEN co.collname END,
                                     a.attstorage <> t.typstorage, a.attislocal)::text
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
             LEFT JOIN pg_collation co ON co.oid = a.attcollation
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relpersistence <> 't' AND {_USER_NS}
  AND {_not_extension_member('pg_class', 'c.oid')}
"""

_SEQUENCES = f"""
SELECT format('%I.%I', n.nspname, c.relname), pg_get_userbyid(c.relowner), c.relpersistence,
       format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
       (SELECT format('%s.%I', d.refobjid::regclass, a.attname) FROM pg_depend d
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
          AND d.deptype IN ('a', 'i') LIMIT 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.relkind = 'S' AND c.relpersistence <> 't' AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')}
"""

_INDEXES = f"""
SELECT format('%I.%I', n.nspname, ic.relname), pg_get_indexdef(x.indexrelid), x.indisclustered, x.indisreplident,
       ic.reloptions
FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE c.relpersistence <> 't' AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')}
"""

_CONSTRAINTS = f"""
SELECT format('%I on %s', co.conname, CASE WHEN co.conrelid <> 0 THEN co.conrelid::regclass::text
                                            ELSE 'domain ' || co.contypid::regtype::text END),
       co.contype, pg_get_constraintdef(co.oid), co.convalidated, co.conislocal
FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
WHERE {_USER_NS} AND {_not_extension_member('pg_constraint', 'co.oid')}
  AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = co.conrelid AND c.relpersistence = 't')
"""

_ROUTINES = f"""
SELECT p.prokind, format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       pg_get_userbyid(p.proowner),
       CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END,
       CASE WHEN p.prokind = 'a' THEN (
           SELECT json_build_array(ag.aggkind, ag.aggtransfn::regproc::text, ag.aggfinalfn::regproc::text,
                                   ag.aggcombinefn::regproc::text, format_type(ag.aggtranstype, NULL),
                                   ag.agginitval, ag.aggsortop::regoperator::text, ag.aggfinalextra,
                                   ag.aggfinalmodify, pg_get_function_result(p.oid))::text
           FROM pg_aggregate ag WHERE ag.aggfnoid = p.oid) END
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {_USER_NS} AND {_not_extension_member('pg_proc', 'p.oid')}
"""

_TRIGGERS = f"""
SELECT format('%I on %s', tg.tgname, tg.tgrelid::regclass), pg_get_triggerdef(tg.oid), tg.tgenabled
FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT tg.tgisinternal AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')}
"""

_RULES = f"""
SELECT format('%I on %s', r.rulename, r.ev_class::regclass), pg_get_ruledef(r.oid), r.ev_enabled
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE r.rulename <> '_RETURN' AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')}
"""

_POLICIES = f"""
SELECT format('%I on %s', p.polname, p.polrelid::regclass), p.polcmd, p.polpermissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END FROM unnest(p.polroles) r ORDER BY 1),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NS}
"""

_EVENT_TRIGGERS = """
SELECT e.evtname, e.evtevent, e.evtfoid::regproc::text, e.evtenabled, e.evttags, pg_get_userbyid(e.evtowner)
FROM pg_event_trigger e
"""

_TYPES = f"""
SELECT t.typtype, format('%I.%I', n.nspname, t.typname), pg_get_userbyid(t.typowner),
       ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END, t.typnotnull, t.typdefault,
       ARRAY(SELECT format('%s %s', a.attname, format_type(a.atttypid, a.atttypmod)) FROM pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE {_USER_NS} AND t.typtype IN ('e', 'd', 'c', 'r') AND {_not_extension_member('pg_type', 't.oid')}
  AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
"""

_EXTENSIONS = """
SELECT e.extname, e.extversion, n.nspname, e.extrelocatable
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
"""

_STATISTICS = f"""
SELECT format('%I.%I', n.nspname, s.stxname), pg_get_statisticsobjdef(s.oid), pg_get_userbyid(s.stxowner)
FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE {_USER_NS}
"""

# Comments on every object made after initdb (OIDs from 16384 are never the system's own).
_COMMENTS = """
SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
FROM pg_description d WHERE d.objoid >= 16384
"""

# Privileges as they differ from the owner's defaults (what GRANT and REVOKE changed): one row per
# (grant or revoke, object, grantee, privilege).  A NULL ACL means the default, and the owner's own
# implicit privileges are not grants anyone made, so neither is listed.
_ACLS = f"""
SELECT 'schema ' || quote_ident(n.nspname), n.nspacl, acldefault('n', n.nspowner)
FROM pg_namespace n WHERE {_USER_NS} AND {_not_extension_member('pg_namespace', 'n.oid')}
UNION ALL
SELECT format('%I.%I', n.nspname, c.relname), c.relacl,
       acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relpersistence <> 't' AND {_USER_NS}
  AND {_not_extension_member('pg_class', 'c.oid')}
UNION ALL
SELECT format('%I.%I (%I)', n.nspname, c.relname, att.attname), att.attacl, NULL::aclitem[]
FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE att.attacl IS NOT NULL AND NOT att.attisdropped AND {_USER_NS}
UNION ALL
SELECT format('function %I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       p.proacl, acldefault('f', p.proowner)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {_USER_NS} AND {_not_extension_member('pg_proc', 'p.oid')}
UNION ALL
SELECT format('type %I.%I', n.nspname, t.typname), t.typacl, acldefault('T', t.typowner)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE {_USER_NS} AND t.typtype IN ('e', 'd', 'r') AND {_not_extension_member('pg_type', 't.oid')}
UNION ALL
SELECT format('large object %s', l.oid), l.lomacl, acldefault('L', l.lomowner) FROM pg_largeobject_metadata l
"""

_ACL_CHANGES = """
SELECT 'grant', x.target, {grantee}, g.privilege_type, g.is_grantable FROM ({acls}) x(target, acl, def),
LATERAL (SELECT grantee, privilege_type, is_grantable FROM aclexplode(coalesce(x.acl, x.def))
         EXCEPT SELECT grantee, privilege_type, is_grantable FROM aclexplode(x.def)) g
UNION ALL
SELECT 'revoke', x.target, {grantee}, g.privilege_type, g.is_grantable FROM ({acls}) x(target, acl, def),
LATERAL (SELECT grantee, privilege_type, is_grantable FROM aclexplode(x.def)
         EXCEPT SELECT grantee, privilege_type, is_grantable FROM aclexplode(coalesce(x.acl, x.def))) g
""".format(acls=_ACLS, grantee=_GRANTEE.replace("a.grantee", "g.grantee"))

# Default privileges (ALTER DEFAULT PRIVILEGES), global ones as they differ from the built-in default.
_DEFAULT_PRIVILEGES = f"""
SELECT pg_get_userbyid(d.defaclrole), CASE WHEN d.defaclnamespace = 0 THEN NULL
                                           ELSE d.defaclnamespace::regnamespace::text END,
       d.defaclobjtype, {_GRANTEE.replace("a.grantee", "g.grantee")}, g.privilege_type, g.is_grantable
FROM pg_default_acl d,
LATERAL (SELECT grantee, privilege_type, is_grantable FROM aclexplode(d.defaclacl)
         EXCEPT SELECT grantee, privilege_type, is_grantable FROM aclexplode(
             CASE WHEN d.defaclnamespace = 0
                  THEN acldefault(CASE d.defaclobjtype WHEN 'S' THEN 's' ELSE d.defaclobjtype END, d.defaclrole)
                  ELSE NULL::aclitem[] END)) g
"""

_OBJECT_TYPES = {"r": "tables", "S": "sequences", "f": "functions", "T": "types", "n": "schemas"}
_RELATION_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table"}
_ROUTINE_KINDS = {"f": "function", "w": "function", "p": "procedure", "a": "aggregate"}
_TYPE_KINDS = {"e": "enum", "d": "domain", "c": "type", "r": "type"}


def read(conn: Connection, tables: Mapping[str, str | None]) -> Fingerprint:
    """The fingerprint of the database ``conn`` sees.

    ``tables``: relstep's key of every table -> the SELECT whose rows the dump holds (redacted
    columns replaced), or None for a table whose rows the dump leaves out (it counts as empty).
    """
    savepoint = conn.begin_nested()
    try:
        _sql(conn, _ROW_TEXT_SETTINGS)
        fp = Fingerprint(engine=NAME)
        _schema(conn, fp)
        for key, select in tables.items():
            # A table whose rows are left out is empty, as a restored one reads: by the first method,
            # which never fails on an empty table (recording it unprefixed made it always differ).
            fp.content[key] = content_of(0, 0, _ROW_HASHES[0][0]) if select is None else _content(conn, select)
        return fp
    finally:
        savepoint.rollback()


def _sql(conn: Connection, statement: str) -> Any:
    return conn.exec_driver_sql(statement, execution_options={"no_parameters": True})


# Row hashes, fastest first.  hash_record_extended (PostgreSQL 14+) hashes each column with its
# type's own hash function, no text output (2.6x faster on bench/'s jsonb table); those functions
# are stable across versions (hash partitioning relies on it).  A column type without one (json,
# xml, geometric types) makes it fail at the first row: the table is then hashed as row text.
# The method prefixes the digest, so digests made differently never compare equal by accident.
# Servers before 11 lack hashtextextended: the first 64 bits of md5 always work.
_ROW_HASHES = (("h", "hash_record_extended(t, 0)"), ("t", "hashtextextended(t::text, 0)"),
               ("m", "('x' || left(md5(t::text), 16))::bit(64)::bigint"))


def _content(conn: Connection, select: str) -> Any:
    from sqlalchemy.exc import DBAPIError

    *attempts, (last_method, last_hash) = _ROW_HASHES
    for method, row_hash in attempts:
        savepoint = conn.begin_nested()
        try:
            rows, total = _sql(conn, _sum_of_row_hashes(select, row_hash)).one()
        except DBAPIError:  # a column type without this hash function, or an older server
            savepoint.rollback()
            continue
        savepoint.commit()
        return content_of(int(rows), int(total), method)
    rows, total = _sql(conn, _sum_of_row_hashes(select, last_hash)).one()  # md5 of row text: always works
    return content_of(int(rows), int(total), last_method)


def _sum_of_row_hashes(select: str, row_hash: str) -> str:
    return f"SELECT count(*), coalesce(sum({row_hash}), 0) FROM ({select}) t"


def _schema(conn: Connection, fp: Fingerprint) -> None:
    for name, owner in _sql(conn, _SCHEMAS):
        fp.add("schema", name)
        fp.add("owner", f"schema {name}", owner, value=owner)
    for kind, name, owner, *description in _sql(conn, _RELATIONS):
        label = _RELATION_KINDS[kind]
        fp.add(label, name, kind, *description)
        fp.add("owner", f"{label} {name}", owner, value=owner)
    for name, owner, *description in _sql(conn, _SEQUENCES):
        last_value, is_called = _sql(conn, f"SELECT last_value, is_called FROM {name}").one()
        fp.add("sequence", name, *description, value=f"{last_value}{'' if is_called else ' (not called)'}")
        fp.add("owner", f"sequence {name}", owner, value=owner)
    for name, *description in _sql(conn, _INDEXES):
        fp.add("index", name, *description)
    for name, *description in _sql(conn, _CONSTRAINTS):
        fp.add("constraint", name, *description)
    for kind, name, owner, *description in _sql(conn, _ROUTINES):
        label = _ROUTINE_KINDS[kind]
        fp.add(label, name, *description)
        fp.add("owner", f"{label} {name}", owner, value=owner)
    for kind, query in (("trigger", _TRIGGERS), ("rule", _RULES), ("policy", _POLICIES),
                        ("event trigger", _EVENT_TRIGGERS), ("statistics", _STATISTICS)):
        for name, *description in _sql(conn, query):
            fp.add(kind, name, *description)
    for kind, name, owner, *description in _sql(conn, _TYPES):
        label = _TYPE_KINDS[kind]
        fp.add(label, name, kind, *description)
        fp.add("owner", f"{label} {name}", owner, value=owner)
    for name, *description in _sql(conn, _EXTENSIONS):
        fp.add("extension", name, *description)
    for name, text in _sql(conn, _COMMENTS):
        fp.add("comment", name, text)
    for change, target, grantee, privilege, grantable in _sql(conn, _ACL_CHANGES):
        option = " WITH GRANT OPTION" if grantable else ""
        fp.add(change, f"{privilege}{option} on {target} {'to' if change == 'grant' else 'from'} {grantee}")
    for role, schema, objtype, grantee, privilege, grantable in _sql(conn, _DEFAULT_PRIVILEGES):
        where = f" in schema {schema}" if schema else ""
        fp.add("default privilege", f"for {role}{where}: {privilege}{' WITH GRANT OPTION' if grantable else ''} "
                                    f"on {_OBJECT_TYPES.get(objtype, objtype)} to {grantee}")
    _large_objects(conn, fp)


def _large_objects(conn: Connection, fp: Fingerprint) -> None:
    """Each large object by OID (pg_dump keeps them) with a digest of its bytes and its owner."""
    from sqlalchemy.exc import DBAPIError

    savepoint = conn.begin_nested()
    try:
        rows = _sql(conn, "SELECT l.oid, md5(lo_get(l.oid)), pg_get_userbyid(l.lomowner) "
                          "FROM pg_largeobject_metadata l").all()
    except DBAPIError:
        savepoint.rollback()
        rows = [(oid, None, owner) for oid, owner in _sql(
            conn, "SELECT oid, pg_get_userbyid(lomowner) FROM pg_largeobject_metadata").all()]
        if rows:
            fp.notes.append("large objects: this role may not read their contents; only their number is compared")
    else:
        savepoint.commit()
    for oid, md5, owner in rows:
        # The owner is part of the object here: a missing large object is one difference, not two.
        fp.add("large object", str(oid), md5, owner)
