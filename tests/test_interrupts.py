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


def test_an_interrupt_python_ignored_in_a_hook_prints_no_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SIGHUP-during-measure failure: the signal landed in logging's at-fork hook, and
    Python printed "Exception ignored" with a traceback before the build stopped."""
    import gc
    import sys

    from baker import cli

    class Raises:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def __del__(self) -> None:
            raise self.exc

    monkeypatch.setattr(sys, "unraisablehook", cli._unraisable)
    Raises(KeyboardInterrupt("signal SIGHUP"))
    gc.collect()
    assert capsys.readouterr().err == ""
    Raises(ValueError("something else"))  # anything else is still reported
    gc.collect()
    assert "ValueError: something else" in capsys.readouterr().err
