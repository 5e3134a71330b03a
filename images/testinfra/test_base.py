"""What every baker image must be: reachable, generic, and booted from its own disk."""


def test_sshd_runs_and_starts_at_boot(host):
    sshd = host.service("ssh")
    assert sshd.is_running
    assert sshd.is_enabled


def test_networking_by_dhcp(host):
    assert host.service("systemd-networkd").is_enabled
    assert host.file("/etc/systemd/network/80-baker-dhcp.network").contains("DHCP=yes")


def test_root_is_the_labelled_ext4_disk(host):
    root = host.mount_point("/")
    assert root.filesystem == "ext4"
    assert host.file("/etc/fstab").contains("LABEL=baker-root")


def test_kernel_and_openssh_installed(host):
    assert host.package("linux-image-cloud-amd64").is_installed
    assert host.package("openssh-server").is_installed


def test_motd_from_the_provisioner(host):
    assert host.file("/etc/motd").contains("baked by baker")
