#!/bin/bash
# Restore A/B (bench/RESULTS.md, "The proof read back overlapping the load"): alternates, ROUNDS times,
# pg_restore -j2 of a plain `pg_dump -Fd -j2 -Z1` dump, then `relstep restore` of the same data from
# each tree (an empty target, then, with BUSY=1, the same database again).  Times in seconds.
#
#   SNAP=<snapshot dir> DUMP=<pg_dump -Fd dir> CONFIG=<relstep.yml> OLD=<tree> NEW=<tree> \
#     [PGURL=postgresql://postgres@127.0.0.1:5432] [BUSY=1] bench/restore_ab.sh ROUNDS
#
# It drops every database named rb_* on the server between runs.
set -u
: "${SNAP:?}" "${DUMP:?}" "${CONFIG:?}" "${OLD:?}" "${NEW:?}"
PGURL="${PGURL:-postgresql://postgres@127.0.0.1:5432}"
P=(psql -qAt "$PGURL/postgres")
clean() {
  for d in $("${P[@]}" -c "select datname from pg_database where datname like 'rb\\_%'"); do
    "${P[@]}" -c "drop database \"$d\""
  done
  "${P[@]}" -c "checkpoint"
}
timed() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; local rc=$?; echo "$(echo "$(date +%s.%N) - $s" | bc) rc=$rc"; }
for r in $(seq 1 "${1:-3}"); do
  clean; "${P[@]}" -c "create database rb_base"
  echo "round $r pg_restore $(timed pg_restore -j2 --exit-on-error -d "$PGURL/rb_base" "$DUMP")"
  for side in old new; do
    clean; "${P[@]}" -c "create database rb_t"
    tree=$OLD; [ "$side" = new ] && tree=$NEW
    run=(env PYTHONPATH="$tree" python -m relstep --config "$CONFIG" restore "$SNAP" --database-url "$PGURL/rb_t" --yes)
    echo "round $r $side empty $(timed "${run[@]}")"
    if [ -n "${BUSY:-}" ]; then echo "round $r $side busy $(timed "${run[@]}")"; fi
  done
done
clean
