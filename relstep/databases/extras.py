"""``python -m relstep.databases.extras``: the pip extras the configured databases need.

The GitHub Action runs it after installing plain relstep when its ``extras`` input is empty, and
then installs ``relstep[<what it printed>]``: a config naming a PostgreSQL URL gets ``postgres``
without anyone having to know the extra.  It prints a comma-separated list (empty when none is
needed) and always exits 0: a config it cannot read is reported by the relstep command that follows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from relstep.databases.registry import spec_for_url
from relstep.errors import RelstepError


def needed_extras(urls: Iterable[str]) -> list[str]:
    """The extras that install the drivers of these database URLs, sorted, each once."""
    found: set[str] = set()
    for url in urls:
        try:
            extra = spec_for_url(url).extra
        except RelstepError:
            continue
        if extra:
            found.add(extra)
    return sorted(found)


def main() -> int:
    from relstep.config import load_config

    try:
        config = load_config(os.environ.get("RELSTEP_CONFIG") or None)
    except RelstepError:
        return 0
    urls = [db.url for db in config.all_databases] + ([config.record.url] if config.record.url else [])
    print(",".join(needed_extras(urls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
