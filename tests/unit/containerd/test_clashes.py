"""doctor `config-clashes` on real-world layouts (tests/fixtures/corpus-external) in temp roots:
ok on a clean node, a warning per clash kind, and nvidia-ctk named as the owner of the file that
holds our handlers on containerd 1.x nvidia nodes (whose loss the next converge repairs)."""

from __future__ import annotations

import shutil

import pytest

from nodeagent.facts import HostFacts
from nodeagent import doctor
from nodeagent.containerd import apply
from nodeagent.containerd.plan import plan_install, plan_uninstall
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from nodeagent.runtimes import gvisor, kata
from tests.support.scenarios import FIXTURES, install_containerd

CORPUS = FIXTURES / "corpus-external" / "inputs"
SPECS = [gvisor.handler(), kata.handler()]
V3_RUNSC = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.gvisor]\n  runtime_type = 'io.containerd.runsc.v1'\n"


def node(tmp_path, case: str, series: str, extra: dict[str, str] | None = None) -> HostRoot:
    shutil.copytree(CORPUS / case, tmp_path, ignore=shutil.ignore_patterns("case.json"), dirs_exist_ok=True)
    for path, text in (extra or {}).items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    install_containerd(tmp_path, series)
    return HostRoot(tmp_path)


def clashes(host: HostRoot) -> doctor.Check:
    checks = doctor.run_checks(host, Settings(root=str(host.root)))
    return next(c for c in checks if c.id == "config-clashes")


@pytest.mark.parametrize("case,series", [("kind-v2", "1.6"), ("eks-nodeadm-nvidia-v3", "2.1"), ("talos-v3", "2.1")])
def test_clean_nodes_are_ok(case, series, tmp_path):
    check = clashes(node(tmp_path, case, series))
    assert check.status == doctor.OK, check


def test_duplicate_handler_across_files(tmp_path):
    host = node(tmp_path, "containerd-docs-runtimeclasses-v3", "2.1", {"/etc/containerd/conf.d/10-gvisor.toml": V3_RUNSC})
    main = host.path("/etc/containerd/config.toml")
    main.write_text("imports = ['/etc/containerd/conf.d/*.toml']\n" + main.read_text())
    check = clashes(host)
    assert check.status == doctor.WARN and "handler 'gvisor' is defined in 2 files" in check.summary, check
    assert check.hint


def test_v2_dropin_next_to_v3_main(tmp_path):
    dropin = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.x]\n  runtime_type = "io.containerd.runc.v2"\n'
    host = node(tmp_path, "talos-v3", "2.1", {"/etc/containerd/conf.d/x.toml": "version = 2\n" + dropin})
    main = host.path("/etc/containerd/config.toml")
    main.write_text(main.read_text().replace("imports = [", "imports = [\n  '/etc/containerd/conf.d/*.toml',", 1))
    check = clashes(host)
    assert check.status == doctor.WARN and "version 2 drop-in next to a version 3 config" in check.summary, check


def test_conf_d_versus_config_d(tmp_path):
    host = node(tmp_path, "eks-al2-v2", "1.7", {"/etc/containerd/conf.d/50-mine.toml": "version = 2\n"})
    check = clashes(host)
    assert check.status == doctor.WARN, check
    assert "/etc/containerd/conf.d/50-mine.toml not loaded" in check.summary and "config.d/*.toml" in check.summary


def test_our_handlers_in_nvidia_ctk_file_name_the_owner_and_converge_repairs_their_loss(tmp_path):
    host = node(tmp_path, "nvidia-ctk-dropin-v2", "1.7")
    facts = HostFacts.from_json({"containerd": {"version": "1.7.24", "config_path": "/etc/containerd/config.toml",
                                                "flavor": "containerd"}})
    original_main = host.path("/etc/containerd/config.toml").read_bytes()
    plan = plan_install(host, SPECS, facts)
    # on 1.x the drop-in's CRI section replaces the main file's (containerd#5837): the only place read
    assert plan.layout.path == "/etc/containerd/conf.d/99-nvidia.toml"
    apply.apply_install(host, plan)
    check = clashes(host)
    assert check.status == doctor.WARN and "owned by nvidia-ctk" in check.summary, check
    assert "runsc" in check.summary and "99-nvidia.toml" in check.summary

    host.path("/etc/containerd/conf.d/99-nvidia.toml").unlink()  # what `nvidia-ctk` cleanup does
    repair = plan_install(host, SPECS, facts)  # what the agent's next converge plans
    assert repair.layout.path == "/etc/containerd/config.toml" and set(repair.added) == {"runsc", "kata"}
    apply.apply_install(host, repair)  # validated and proven by the real 1.7
    assert clashes(host).status == doctor.OK
    undo, state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, state)
    assert host.path("/etc/containerd/config.toml").read_bytes() == original_main
