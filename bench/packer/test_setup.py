"""baker's tests for the bench image (Packer runs none): what the two steps made."""


def test_the_user(host):
    assert host.user("ops").home == "/home/ops"


def test_the_motd(host):
    assert host.file("/etc/motd").contains("Packer comparison")


def test_the_unit_is_enabled(host):
    assert host.service("image-release").is_enabled
