"""The organisation's base (images/org-base.yaml), in it and in every image built on it: the
admin user, the hardened sshd, the release file."""


def test_admin_user(host):
    admin = host.user("ops")
    assert admin.exists
    assert admin.shell == "/bin/bash"


def test_sshd_hardened(host):
    config = host.run("sshd -T").stdout
    assert "passwordauthentication no" in config
    assert "maxauthtries 3" in config


def test_org_release(host):
    assert host.file("/etc/org-release").contains("ORG_BASE=org-base")
