"""An application image on the organisation's base (images/org-app.yaml): its own file and
package, and the base's tree under it (test_org.py runs on it too)."""


def test_app_config(host):
    conf = host.file("/etc/org-app.conf")
    assert conf.contains("APP=org-app")
    assert conf.mode == 0o644


def test_built_on_the_base(host):
    # The child's provisioner read the parent's release file while it ran.
    assert host.file("/etc/org-app.conf").contains("ON=ORG_BASE=org-base")


def test_its_own_package(host):
    # base.packages on a child: fetched on the host, installed on the parent's tree.
    assert host.package("tree").is_installed
    assert host.run("tree -L 1 /etc/ssh").rc == 0
