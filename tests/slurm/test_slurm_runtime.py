"""signals and faults, in one process (no cluster): the pieces the trainer and job scripts rely on."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from hpcgan.errors import UserError
from hpcgan.runtime import faults, signals


@pytest.fixture
def clean_signals():
    signals.uninstall()
    signals.reset()
    yield
    signals.uninstall()
    signals.reset()


def test_usr2_and_term_set_the_flag_only(clean_signals) -> None:
    signals.install()
    assert signals.requested() is None
    os.kill(os.getpid(), signal.SIGUSR2)
    assert signals.requested() == "SIGUSR2" and signals.received_at() is not None
    os.kill(os.getpid(), signal.SIGTERM)  # still alive: the handler only records
    assert signals.requested() == "SIGUSR2"  # the first signal is the one reported
    assert signals.EXIT_REQUEUE == 75


def test_signal_set_from_environment(clean_signals, monkeypatch) -> None:
    monkeypatch.setenv("HPCGAN_PREEMPT_SIGNALS", "usr1, SIGHUP")
    signals.install()
    assert signal.getsignal(signal.SIGUSR1) is signals._handler
    assert signal.getsignal(signal.SIGHUP) is signals._handler
    assert signal.getsignal(signal.SIGUSR2) is not signals._handler
    os.kill(os.getpid(), signal.SIGHUP)
    assert signals.requested() == "SIGHUP"


def test_unknown_signal_name(clean_signals) -> None:
    with pytest.raises(ValueError, match="HPCGAN_PREEMPT_SIGNALS: unknown signal 'USR9'"):
        signals.install("USR9")


def test_uninstall_restores_previous_handlers(clean_signals) -> None:
    before = signal.getsignal(signal.SIGTERM)
    signals.install()
    signals.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("spec, expected", [("1:20:exit", faults.Fault(1, 20, "exit")),
                                            (" 0:0:RAISE ", faults.Fault(0, 0, "raise")),
                                            ("3:7:hang", faults.Fault(3, 7, "hang")),
                                            ("", None), (None, None)])
def test_parse(spec, expected) -> None:
    assert faults.parse(spec) == expected


@pytest.mark.parametrize("spec", ["1:20", "a:1:exit", "1:-1:exit", "1:2:explode", "1:2:exit:4"])
def test_parse_errors_name_the_source(spec) -> None:
    with pytest.raises(UserError, match=r"^HPCGAN_FAULT='.*': expected RANK:STEP:ACTION"):
        faults.parse(spec, "HPCGAN_FAULT")


def test_environment_wins_over_config(monkeypatch) -> None:
    monkeypatch.delenv("HPCGAN_FAULT", raising=False)
    assert faults.resolve("0:5:raise") == faults.Fault(0, 5, "raise")
    assert faults.resolve("") is None
    monkeypatch.setenv("HPCGAN_FAULT", "1:2:exit")
    assert faults.resolve("0:5:raise") == faults.Fault(1, 2, "exit")


def test_inject_only_at_its_rank_and_step() -> None:
    f = faults.Fault(1, 3, "raise")
    faults.maybe_inject(f, 0, 3)
    faults.maybe_inject(f, 1, 2)
    with pytest.raises(faults.InjectedFault, match="rank 1 at step 3"):
        faults.maybe_inject(f, 1, 3)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("action, code", [("exit", faults.EXIT_FAULT), ("kill", -signal.SIGKILL)])
def test_exit_and_kill_end_the_process(action, code) -> None:
    prog = ("from hpcgan.runtime import faults; import time\n"
            f"faults.maybe_inject(faults.Fault(0, 1, '{action}'), 0, 1)\nprint('survived')")
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=50)
    assert p.returncode == code, p.stdout + p.stderr
    assert "survived" not in p.stdout and f"injected fault: {action} at step 1" in p.stderr


@pytest.mark.timeout(60)
def test_hang_hangs() -> None:
    prog = "from hpcgan.runtime import faults\nfaults.maybe_inject(faults.Fault(0, 1, 'hang'), 0, 1)"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", prog], capture_output=True, timeout=5)
