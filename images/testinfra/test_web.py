"""The web image: nginx serves the provisioned page; the admin user and sshd hardening hold."""


def test_nginx_enabled_and_listening(host):
    nginx = host.service("nginx")
    assert nginx.is_running
    assert nginx.is_enabled
    assert host.socket("tcp://0.0.0.0:80").is_listening


def test_serves_the_provisioned_page(host):
    page = host.run(
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/80; "
        'printf "GET / HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n" >&3; cat <&3\''
    )
    assert page.rc == 0
    assert "200 OK" in page.stdout
    assert "baked by baker" in page.stdout
    assert "Server: nginx\r\n" in page.stdout  # server_tokens off: no version


def test_admin_user(host):
    admin = host.user("web-admin")
    assert admin.exists
    assert admin.shell == "/bin/bash"
    assert host.file("/home/web-admin").is_directory


def test_sshd_hardened(host):
    config = host.run("sshd -T").stdout
    assert "passwordauthentication no" in config
    assert "x11forwarding no" in config


def test_image_release_unit(host):
    unit = host.service("image-release")
    assert unit.is_enabled
    assert host.file("/run/image-release").contains("IMAGE=debian-12-web")
