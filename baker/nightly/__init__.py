"""Nightly rebuilds: what changed since last night, the history of every night, the report site."""
