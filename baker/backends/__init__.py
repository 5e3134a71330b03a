"""Backends: where build machines run. The interface is in baker.backends.base; libvirt
(local or remote URI), EC2 and a fake for the unit tests implement it (factory.open_backend picks
the recipe's), and plainqemu boots a published image the plain way to check and measure it."""
