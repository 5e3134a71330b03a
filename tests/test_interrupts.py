"""A stop asked for by a signal whose KeyboardInterrupt Python dropped (raised inside one of
its own hooks, such as at fork) is acted on at the next check, once."""

from __future__ import annotations

import signal

import pytest

from baker import interrupts


def test_a_noted_signal_is_raised_at_the_next_check_and_only_once() -> None:
    interrupts.check()  # nothing noted: returns
    interrupts.note(signal.SIGHUP)
    with pytest.raises(KeyboardInterrupt, match="SIGHUP"):
        interrupts.check()
    interrupts.check()  # acted on: not again


def test_the_ssh_wait_checks_for_a_dropped_stop() -> None:
    from baker.edge import ssh

    interrupts.note(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        ssh.answering(ssh.Endpoint("127.0.0.1", ssh.free_port()), 30, lambda: True)
