"""relstep: a release-backup and version-tracking pipeline step."""

__version__ = "0.1.0"
