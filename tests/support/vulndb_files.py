"""A vulnerability snapshot in the Debian Security Tracker's JSON format (what
security-tracker.debian.org/tracker/data/json serves), about packages every Debian 12 image
baker makes has: made by the tests, since the real one cannot be downloaded here. Its ids
are from the year 2099 so no reader takes them for real advisories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The source package, id, what Debian says of bookworm: a fix no installed version has yet
# (fixable), an open issue (no fix yet), an issue the suite never had (not affected).
FIXABLE = ("openssh", "CVE-2099-0001", {"status": "resolved", "fixed_version": "1:99.0p1-1",
                                          "urgency": "high"})  # fmt: skip
NO_FIX = ("systemd", "CVE-2099-0002", {"status": "open", "urgency": "low"})
NOT_AFFECTED = ("bash", "CVE-2099-0003", {"status": "resolved", "fixed_version": "0",
                                           "urgency": "medium"})  # fmt: skip


def tracker(path: Path) -> Path:
    data: dict[str, dict[str, Any]] = {}
    for source, vid, release in (FIXABLE, NO_FIX, NOT_AFFECTED):
        data.setdefault(source, {})[vid] = {
            "description": f"a made-up issue in {source}",
            "scope": "remote",
            "releases": {"bookworm": {"repositories": {"bookworm": "0"}, **release}},
        }
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    return path
