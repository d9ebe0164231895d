"""Tests of relstep.migrations (a package so its modules do not clash with other test folders)."""
