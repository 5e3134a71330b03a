"""baker.image.packages.parse_status: the installed packages of an image, from dpkg's database."""

from __future__ import annotations

from baker.image.packages import Package, parse_status

STATUS = """\
Package: zlib1g
Status: install ok installed
Priority: required
Section: libs
Installed-Size: 168
Maintainer: Mark Brown <broonie@debian.org>
Architecture: amd64
Multi-Arch: same
Source: zlib
Version: 1:1.2.13.dfsg-1
Provides: libz1
Depends: libc6 (>= 2.14)
Description: compression library - runtime
 zlib is a library implementing the deflate compression method found
 in gzip and PKZIP.  This package includes the shared library.
Homepage: http://zlib.net/

Package: libssl3
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 6155
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Multi-Arch: same
Source: openssl (3.0.15-1~deb12u1)
Version: 3.0.15-1~deb12u1
Depends: libc6 (>= 2.34)
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project's implementation of the SSL
 and TLS cryptographic protocols for secure communication over the
 Internet.
 .
 It provides the libssl and libcrypto shared libraries.
 Package: this-continuation-line-is-not-a-package
 Status: neither is this one

Package: openssh-server
Status: deinstall ok config-files
Priority: optional
Section: net
Installed-Size: 1892
Maintainer: Debian OpenSSH Maintainers <debian-ssh@lists.debian.org>
Architecture: amd64
Source: openssh
Version: 1:9.2p1-2+deb12u3
Conffiles:
 /etc/ssh/moduli 6da9be4ab9d3f0a27a4a1ab1b0d5c1a1
 /etc/ssh/sshd_config.d obsolete
Description: secure shell (SSH) server, for secure access from remote machines
 This is the portable version of OpenSSH.

Package: libgcc-s1
Status: install ok installed
Architecture: amd64
Source: gcc-12 (12.2.0-14)
Version: 12.2.0-14
Description: GCC support library

Package: half-done
Status: install ok half-configured
Architecture: all
Version: 1.0
Description: must not be listed

Package: base-files
Status: hold ok installed
Essential: yes
Architecture: amd64
Version: 12.4+deb12u9
Description: Debian base system miscellaneous files

Package: gcc-12-base
Status: install ok installed
Architecture: amd64
Source: gcc-12
Version: 12.2.0-14
Description: GCC, the GNU Compiler Collection (base package)
"""


def test_parse_status() -> None:
    assert parse_status(STATUS) == [
        Package("base-files", "12.4+deb12u9", "amd64", "base-files", "12.4+deb12u9"),
        Package("gcc-12-base", "12.2.0-14", "amd64", "gcc-12", "12.2.0-14"),
        Package("libgcc-s1", "12.2.0-14", "amd64", "gcc-12", "12.2.0-14"),
        Package("libssl3", "3.0.15-1~deb12u1", "amd64", "openssl", "3.0.15-1~deb12u1"),
        Package("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib", "1:1.2.13.dfsg-1"),
    ]


def test_source_version_differs_from_binary_version() -> None:
    text = (
        "Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\n"
        "Source: foo (1.2-3)\nVersion: 1.2-3+b1\n"
    )
    (pkg,) = parse_status(text)
    assert (pkg.source, pkg.source_version, pkg.version) == ("foo", "1.2-3", "1.2-3+b1")


def test_removed_packages_are_excluded() -> None:
    names = [p.name for p in parse_status(STATUS)]
    assert "openssh-server" not in names  # deinstall ok config-files
    assert "half-done" not in names
    assert "this-continuation-line-is-not-a-package" not in names


def test_order_does_not_depend_on_the_file() -> None:
    stanzas = STATUS.strip().split("\n\n")
    assert parse_status("\n\n".join(reversed(stanzas)) + "\n") == parse_status(STATUS)


def test_empty_status() -> None:
    assert parse_status("") == []
