"""The safety gates on real images. The session's base is scanned against a snapshot in the
Debian Security Tracker's format (tests/support/vulndb_files.py): its report says what the
snapshot says of its real packages, verifies, is the same bytes when scanned again, and fails
a `--fail-on high` scan; its image has no leaks. A recipe whose provisioners leave an AWS key,
an OpenSSH private key and a build secret's value in /root fails at the leak check naming the
three files, with the value never printed, and leaves nothing behind. (A secret that reaches
the machine and nowhere else is shown on the nightly's image: tests/e2e/test_e2e_nightly.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import vulndb_files
from support.bakerun import Baked, assert_nothing_left, domains, run_baker

pytestmark = pytest.mark.e2e

# debian-12-base's base, so the session's saved build machine is resumed: the smallest
# build that reaches the leak check.
LEAKY = """\
name: e2e-leaky
base:
  suite: bookworm
  arch: amd64
  disk_size_mib: 2048
secrets:
  TOKEN: {env: E2E_LEAKY_TOKEN}
provisioners:
  - name: keys
    inline: |
      mkdir -p /root/.aws /root/.ssh
      printf '[default]\\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\\n' >/root/.aws/credentials
      ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
  - name: token
    secrets: [TOKEN]
    inline: |
      echo "the token is $TOKEN"
      printf '%s' "$TOKEN" >/root/token.txt
"""
VALUE = "e2e-Secret-Value-5150"


def test_the_base_is_scanned_against_the_pinned_snapshot(
    base_image: Baked, vuln_db: Path, tmp_path: Path, work_root: Path
) -> None:
    report = base_image.artifact / "vulns.cdx.json"
    doc = json.loads(report.read_text())
    status = {
        v["id"]: {p["name"]: p["value"] for p in v["properties"]}["baker:vuln:status"]
        for v in doc["vulnerabilities"]
    }
    assert status == {"CVE-2099-0001": "fixable", "CVE-2099-0002": "no-fix",
                      "CVE-2099-0003": "not-affected"}  # fmt: skip
    (ssh,) = [v for v in doc["vulnerabilities"] if v["id"] == "CVE-2099-0001"]
    assert any("openssh-server@" in a["ref"] for a in ssh["affects"])
    installed = {p["name"]: p["value"] for p in ssh["properties"]}["baker:vuln:installed-version"]
    record = json.loads((base_image.artifact / "build.json").read_text())
    assert record["scan"]["counts"]["high"]["fixable"] == 1
    assert (
        "ok   vulns.cdx.json: names sha256:"
        in run_baker("verify", base_image.artifact, work=work_root).stdout
    )
    shown = run_baker("inspect", base_image.artifact, work=work_root).stdout
    assert "  vulns     1 high (1 fixable), 1 low (0 fixable), against sha256:" in shown
    # The same image and snapshot give the same bytes, and `baker scan` gates on them.
    again = tmp_path / "again.cdx.json"
    scanned = run_baker("scan", base_image.artifact, "--vuln-db", vuln_db, "--report", again,
                        "--fail-on", "high", "--secrets", work=work_root)  # fmt: skip
    assert again.read_bytes() == report.read_bytes()
    assert scanned.returncode == 1
    assert "high     CVE-2099-0001      openssh " in scanned.stdout
    assert "no leaks in the image" in scanned.stdout
    assert scanned.stderr.strip().splitlines() == [
        "baker: error: the vulnerability gate failed: 1 finding at or above high with a fix in "
        f"the suite, the worst CVE-2099-0001 (high) in openssh {installed}, fixed in "
        f"{vulndb_files.FIXABLE[2]['fixed_version']}"
    ]


def test_keys_and_a_secret_left_in_the_image_fail_the_leak_check_naming_only_files(
    base_image: Baked, tmp_path: Path, work_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_LEAKY_TOKEN", VALUE)
    recipe = tmp_path / "leaky.yaml"
    recipe.write_text(LEAKY)
    out, work = tmp_path / "out", work_root / "leaky"
    work.mkdir(mode=0o711)
    before = domains()
    proc = run_baker("build", recipe, "--out", out, work=work)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "baker: error: the leak check found 3 secrets in the image, nothing was published: "
        "/root/.aws/credentials (AWS Access Key), /root/.ssh/id_ed25519 (Private Key), "
        "/root/token.txt (the value of secret TOKEN); remove them in the provisioner that "
        "left them, or allow a path with a reason under leak_check.allow."
    )
    # The value reached the machine (the check found it there) and no line baker printed.
    assert "the token is ***" in proc.stderr
    assert VALUE not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert_nothing_left(out, work, "e2e-leaky", before, proc.stderr)
