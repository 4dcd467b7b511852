"""The fault-point registry: configuration by name, every action, modifiers and filters."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

import pytest

from atoll import exceptions, faults

ALPHA = faults.register("test.faults.alpha", "first test point")
BETA = faults.register("test.faults.beta", "second test point")
OTHER = faults.register("test.other.gamma", "a point outside test.faults")


@pytest.fixture(autouse=True)
def _no_faults():
    faults.configure({})
    yield
    faults.configure({})


def test_register_is_idempotent_and_listed_sorted():
    assert faults.register(ALPHA, "first test point") == ALPHA
    names = [p.name for p in faults.registered()]
    assert names == sorted(names)
    assert faults.FaultPoint(ALPHA, "first test point") in faults.registered()


def test_register_same_name_other_description_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        faults.register(ALPHA, "something else")


def test_no_active_fault_returns_none():
    assert faults.hit(ALPHA, host="h1") is None
    assert faults.active() == {}


def test_raise_default_is_injected_fault():
    faults.configure({ALPHA: "raise"})
    with pytest.raises(exceptions.InjectedFault, match=ALPHA):
        faults.hit(ALPHA)
    assert faults.hit(BETA) is None


def test_raise_named_class_with_message():
    faults.configure({ALPHA: "raise:VirtError:disk on fire"})
    with pytest.raises(exceptions.VirtError, match="disk on fire"):
        faults.hit(ALPHA)


def test_raise_hypervisor_unavailable_names_the_host():
    faults.configure({ALPHA: "raise:HypervisorUnavailable"})
    with pytest.raises(exceptions.HypervisorUnavailable, match="host1"):
        faults.hit(ALPHA, host="host1")


def test_reply_faults_return_an_outcome():
    faults.configure({ALPHA: "drop_reply", BETA: "duplicate_reply"})
    assert faults.hit(ALPHA) == faults.FaultOutcome("drop_reply", ALPHA, "drop_reply")
    outcome = faults.hit(BETA)
    assert outcome is not None and outcome.kind == "duplicate_reply"


def test_hang_delays_then_continues():
    faults.configure({ALPHA: "hang:0.2"})
    start = time.monotonic()
    assert faults.hit(ALPHA) is None
    assert time.monotonic() - start >= 0.2


def test_nth_hit_only():
    faults.configure({ALPHA: "raise@2"})
    assert faults.hit(ALPHA) is None
    with pytest.raises(exceptions.InjectedFault):
        faults.hit(ALPHA)
    assert faults.hit(ALPHA) is None
    assert faults.hit(ALPHA) is None


def test_first_n_hits():
    faults.configure({ALPHA: "raise:HypervisorUnavailable*2"})
    for _ in range(2):
        with pytest.raises(exceptions.HypervisorUnavailable):
            faults.hit(ALPHA)
    assert faults.hit(ALPHA) is None


def test_configure_resets_the_counts():
    faults.configure({ALPHA: "drop_reply*1"})
    assert faults.hit(ALPHA) is not None
    assert faults.hit(ALPHA) is None
    faults.configure({ALPHA: "drop_reply*1"})
    assert faults.hit(ALPHA) is not None


def test_host_filter_and_its_counting():
    faults.configure({ALPHA: "raise:HypervisorUnavailable*1;host=host1"})
    assert faults.hit(ALPHA, host="host2") is None
    assert faults.hit(ALPHA) is None
    with pytest.raises(exceptions.HypervisorUnavailable, match="host1"):
        faults.hit(ALPHA, host="host1")
    assert faults.hit(ALPHA, host="host1") is None


def test_modifier_may_follow_the_filter():
    faults.configure({ALPHA: "drop_reply;host=h1@2"})
    assert faults.hit(ALPHA, host="h1") is None
    assert faults.hit(ALPHA, host="h1") is not None
    assert faults.active() == {ALPHA: "drop_reply;host=h1@2"}


def test_glob_applies_to_every_matching_point():
    faults.configure({"test.faults.*": "drop_reply"})
    assert faults.hit(ALPHA) is not None
    assert faults.hit(BETA) is not None
    assert faults.hit(OTHER) is None


def test_glob_counts_per_point():
    faults.configure({"test.faults.*": "drop_reply*1"})
    assert faults.hit(ALPHA) is not None
    assert faults.hit(BETA) is not None
    assert faults.hit(ALPHA) is None


def test_exact_name_wins_over_glob():
    faults.configure({"test.faults.*": "drop_reply", ALPHA: "duplicate_reply"})
    assert faults.hit(ALPHA).kind == "duplicate_reply"
    assert faults.hit(BETA).kind == "drop_reply"


def test_unknown_point_is_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown fault point 'no\.such'.*test\.faults\.alpha"):
        faults.configure({"no.such": "raise"})
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.configure({"nothing.matches.*": "raise"})
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.set_fault("no.such", "raise")


@pytest.mark.parametrize(
    "action",
    [
        "",
        "explode",
        "raise:NoSuchError",
        "raise:Path",
        "hang",
        "hang:soon",
        "hang:-1",
        "hang:inf",
        "kill:now",
        "raise@0",
        "raise@1*2",
        "raise;host",
    ],
)
def test_bad_actions_are_rejected(action):
    with pytest.raises(ValueError):
        faults.configure({ALPHA: action})


def test_a_bad_spec_leaves_the_active_set_unchanged():
    faults.configure({ALPHA: "drop_reply"})
    with pytest.raises(ValueError):
        faults.configure({BETA: "drop_reply", "no.such": "raise"})
    assert faults.active() == {ALPHA: "drop_reply"}


def test_set_fault_adds_and_removes():
    faults.set_fault(ALPHA, "drop_reply")
    faults.set_fault(BETA, "duplicate_reply")
    assert faults.active() == {ALPHA: "drop_reply", BETA: "duplicate_reply"}
    faults.set_fault(ALPHA, None)
    faults.set_fault(ALPHA, None)
    assert faults.active() == {BETA: "duplicate_reply"}
    assert faults.hit(ALPHA) is None


def test_firing_is_logged_as_a_warning(caplog):
    faults.configure({ALPHA: "drop_reply"})
    with caplog.at_level(logging.WARNING, logger="atoll.faults"):
        faults.hit(ALPHA, host="h9")
    assert any(
        r.levelno == logging.WARNING and ALPHA in r.getMessage() and "drop_reply" in r.getMessage()
        for r in caplog.records
    )


def test_counting_is_thread_safe():
    faults.configure({ALPHA: "drop_reply*50"})
    fired = []

    def worker():
        for _ in range(20):
            if faults.hit(ALPHA) is not None:
                fired.append(1)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fired) == 50


def test_kill_ends_the_process_with_sigkill():
    code = (
        "from atoll import faults\n"
        "faults.register('drill.crash', 'crash here')\n"
        "faults.configure({'drill.crash': 'kill'})\n"
        "faults.hit('drill.crash')\n"
        "print('survived')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert "survived" not in proc.stdout
