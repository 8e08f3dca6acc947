"""CRI against real containerd daemons (1.6, 1.7, 2.1): status, handlers, pods, the 1.x drop-in fault."""

from __future__ import annotations

import os
import threading
import time

import pytest

from nodeagent.containerd import cri, health
from tests.support.containerd_daemon import minimal_config
from tests.support.oci_image import TEST_IMAGE, import_test_images

pytestmark = pytest.mark.integration

EXTRA_HANDLER = {
    # a handler whose runtime_type names a shim that does not exist: CRI lists it all the same
    "1.6": '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n  runtime_type = "io.containerd.runsc.v1"\n',
    "1.7": '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n  runtime_type = "io.containerd.runsc.v1"\n',
    "2.1": "\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc]\n  runtime_type = 'io.containerd.runsc.v1'\n",
}


@pytest.mark.parametrize("version", ["1.6", "1.7", "2.1"])
def test_status_lists_configured_handlers(containerd_factory, version):
    daemon = containerd_factory(version, lambda work: minimal_config(version, work, extra=EXTRA_HANDLER[version]))
    status = cri.cri_status(daemon.socket)
    assert status.ok, status.as_dict()
    assert status.handlers == {"runc", "runsc"}
    assert status.runtime_types()["runsc"] == "io.containerd.runsc.v1"
    assert status.runtime_version and status.runtime_version.startswith(version)
    assert status.config["restrictOOMScoreAdj"] is True


@pytest.mark.parametrize("version", ["1.6", "1.7"])
def test_partial_cri_dropin_on_1x_reports_plugin_not_ok(containerd_factory, version):
    """containerd#5837: a drop-in with a CRI table replaces the whole section on 1.x.

    The daemon starts and answers, but the CRI plugin fails (default runtime "runc" is gone):
    exactly the fault the installer must detect and roll back.
    """

    def config(work):
        dropin = work / "runsc.toml"
        dropin.write_text(EXTRA_HANDLER[version])
        return f'imports = ["{dropin}"]\n' + minimal_config(version, work)

    daemon = containerd_factory(version, config)
    assert daemon.answers()  # the socket answers: "socket up" alone would call this healthy
    status = cri.cri_status(daemon.socket)
    assert status.answers and not status.plugin_ok and not status.ok
    assert "UNIMPLEMENTED" in status.reason
    assert 'default_runtime_name = \\"runc\\"' in status.reason or 'default_runtime_name = "runc"' in status.reason
    with cri.CriClient(daemon.socket) as client, pytest.raises(cri.CriPluginNotOk):
        client.run_pod("runc")


def test_status_of_missing_and_stopped_daemon(containerd_factory, tmp_path):
    status = cri.cri_status(tmp_path / "absent.sock")
    assert not status.answers and "no socket" in status.reason
    daemon = containerd_factory("2.1")
    assert cri.cri_status(daemon.socket).ok
    daemon.stop()
    status = cri.cri_status(daemon.socket)
    assert not status.ok and not status.answers


def test_socket_that_is_not_containerd(tmp_path):
    """A unix socket that accepts and closes (not gRPC): unavailable, not a crash."""
    import socket
    import threading

    path = tmp_path / "fake.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        start = time.monotonic()
        status = cri.cri_status(path, timeout=1.0)
        assert not status.answers and status.reason
        assert time.monotonic() - start < 5
    finally:
        stop.set()
        t.join()
        srv.close()


def test_read_cri_log_joins_partial_lines():
    text = (
        "2026-01-01T00:00:00.000000000Z stdout P 6.18\n"
        "2026-01-01T00:00:00.000000001Z stdout F .44-fc\n"
        "2026-01-01T00:00:00.000000002Z stderr F second line\n"
    )
    assert cri.read_cri_log(text) == "6.18.44-fc\nsecond line\n"


@pytest.mark.parametrize("version", ["1.6", "2.1"])
def test_pod_with_runc_handler_runs_uname(containerd_factory, version):
    """A real RunPodSandbox → SANDBOX_READY, a container's `uname -r` read from its CRI log."""
    daemon = containerd_factory(version)
    import_test_images(daemon)
    with cri.CriClient(daemon.socket) as client:
        start = time.monotonic()
        pod = client.run_pod("runc", log_directory=str(daemon.work / "pods"))
        ready_after = time.monotonic() - start
        assert client.pod_state(pod.id) == cri.SANDBOX_READY
        run = client.run_container(pod, TEST_IMAGE, ["uname", "-r"])
        assert run.exit_code == 0
        assert run.output.strip() == os.uname().release  # runc shares the host kernel
        failing = client.run_container(pod, TEST_IMAGE, ["sh", "-c", "echo to-stderr >&2; exit 3"], name="fails")
        assert (failing.exit_code, failing.output) == (3, "to-stderr\n")
        client.destroy_pod(pod)
        assert [p.id for p in client.list_pods()] == []
        client.destroy_pod(pod)  # a second destroy of a gone pod is fine
    assert ready_after < 5, ready_after


def test_unknown_handler_is_refused_like_a_wrong_runtimeclass(containerd_factory):
    daemon = containerd_factory("1.7")
    import_test_images(daemon)
    with cri.CriClient(daemon.socket) as client, pytest.raises(cri.HandlerNotConfigured) as err:
        client.run_pod("no-such-handler")
    assert 'no runtime for "no-such-handler" is configured' in err.value.message
    assert err.value.hint


def test_wait_healthy_reports_missing_handler_then_broken_plugin(containerd_factory):
    daemon = containerd_factory("1.6")
    report = health.wait_healthy(str(daemon.socket), ["runc"], timeout=5)
    assert report.healthy and report.reason is None and report.attempts == 1

    start = time.monotonic()
    report = health.wait_healthy(str(daemon.socket), ["runc", "runsc"], timeout=0.6)
    assert not report.healthy and report.missing_handlers == ["runsc"]
    assert "runsc" in report.reason and "not healthy after" in report.reason
    assert 0.4 < time.monotonic() - start < 3

    daemon.stop()
    dropin = daemon.work / "runsc.toml"
    dropin.write_text(EXTRA_HANDLER["1.6"])
    daemon.write_config(f'imports = ["{dropin}"]\n' + minimal_config("1.6", daemon.work))
    daemon.start()
    report = health.wait_healthy(str(daemon.socket), ["runsc"], timeout=0.5)
    assert not report.healthy and "CRI plugin is not loaded" in report.reason


def test_wait_healthy_waits_for_a_daemon_that_comes_up_late(containerd_factory):
    daemon = containerd_factory("2.1", start=False)
    reports = []
    # the waiter runs in a thread: the daemon must be started from the main thread, because it
    # dies with the thread that started it (pdeathsig)
    waiter = threading.Thread(target=lambda: reports.append(health.wait_healthy(str(daemon.socket), ["runc"], timeout=10)))
    waiter.start()
    time.sleep(0.4)
    daemon.start()
    waiter.join()
    report = reports[0]
    assert report.healthy, report.reason
    assert report.attempts > 1 and report.elapsed >= 0.3


def test_pod_lifecycle_and_ensure_healthy(containerd_factory):
    daemon = containerd_factory("1.6")
    import_test_images(daemon)
    assert health.ensure_healthy(str(daemon.socket), ["runc"], timeout=5).healthy
    with pytest.raises(health.Unhealthy) as err:
        health.ensure_healthy(str(daemon.socket), ["kata"], timeout=0.3)
    assert "kata" in err.value.message and err.value.hint
    with cri.CriClient(daemon.socket) as client:  # a client per call, as the one-call helpers did
        pod = client.run_pod("runc", "helpers")
    assert cri.cri_status(daemon.socket).ok
    with cri.CriClient(daemon.socket) as client:
        client.stop_pod(pod.id)
    with cri.CriClient(daemon.socket) as client:
        client.remove_pod(pod.id)
    with cri.CriClient(daemon.socket) as client:
        assert client.list_pods() == []
