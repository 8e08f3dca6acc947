"""containerd.health: judging one CRI status against the handlers we expect, and the report the
installer rolls back on. Waiting on real daemons is tests/integration/test_cri.py's job; here a
socket that does not exist stands for a daemon that never comes up."""

from __future__ import annotations

import pytest

from nodeagent.containerd.cri import Condition, CriStatus
from nodeagent.containerd.health import HealthReport, Unhealthy, ensure_healthy, judge, wait_healthy


def ok_status(*handlers: str) -> CriStatus:
    return CriStatus(socket="/s", answers=True, plugin_ok=True, ready=True, handlers=set(handlers))


def test_a_ready_daemon_serving_every_expected_handler_is_healthy():
    assert judge(ok_status("runc", "runsc"), ["runsc", "runsc"]) == (True, None, [])
    assert judge(ok_status(), []) == (True, None, [])


def test_missing_handlers_are_named_sorted_with_what_is_served():
    healthy, reason, missing = judge(ok_status("runc", "b"), iter(["kata", "runsc", "runc"]))
    assert (healthy, missing) == (False, ["kata", "runsc"])
    assert reason == "CRI does not list handler(s) kata, runsc (it serves: b, runc)"
    assert judge(ok_status(), ["runc"])[1] == "CRI does not list handler(s) runc (it serves: none)"


@pytest.mark.parametrize("status", [
    CriStatus(socket="/s", answers=True, plugin_ok=True, ready=False, handlers={"runc"}, reason="CRI runtime not ready"),
    CriStatus(socket="/s", answers=True, plugin_ok=False, ready=True, handlers={"runc"}),
    CriStatus(socket="/s", answers=False, plugin_ok=True, ready=True, handlers={"runc"}),
])
def test_a_daemon_that_is_not_ok_is_unhealthy_whatever_it_lists(status):
    healthy, reason, missing = judge(status, ["runc"])
    assert not healthy and missing == []
    assert reason == (status.reason or "containerd is not ready")


def test_the_report_rounds_elapsed_and_carries_the_cri_status():
    status = ok_status("runc")
    status.conditions = [Condition("RuntimeReady", True)]
    report = HealthReport(False, "why", 1.23456, 3, status, ["kata"])
    out = report.as_dict()
    assert out["elapsed"] == 1.235 and out["attempts"] == 3 and out["missing_handlers"] == ["kata"]
    assert out["cri"]["handlers"] == ["runc"] and out["cri"]["conditions"][0]["type"] == "RuntimeReady"


def test_waiting_on_an_absent_socket_gives_up_with_the_last_reason(tmp_path):
    socket = str(tmp_path / "absent.sock")
    report = wait_healthy(socket, ["runc"], timeout=0.3, interval=0.05)
    assert not report.healthy and report.attempts >= 2
    assert report.reason.startswith("not healthy after ") and report.reason.endswith(f"no socket at {socket}")
    assert report.status.socket == socket and not report.status.answers


def test_a_zero_timeout_still_probes_once(tmp_path):
    report = wait_healthy(str(tmp_path / "absent.sock"), timeout=0)
    assert not report.healthy and report.attempts == 1


def test_ensure_healthy_raises_unhealthy_with_the_reason_and_a_hint(tmp_path):
    with pytest.raises(Unhealthy) as err:
        ensure_healthy(str(tmp_path / "absent.sock"), ["runc"], timeout=0.1)
    assert err.value.message.startswith("containerd is not healthy: not healthy after ")
    assert "no socket at" in err.value.message and "journalctl" in err.value.hint
