"""Safety gates on a captured image: a vulnerability scan against a pinned snapshot, and a leak
check for secrets."""
