"""kube.nfd: the node-feature-discovery feature file, for clusters that label only through NFD."""

from nodeagent.host import HostRoot
from nodeagent.kube.nfd import FEATURE_FILE, feature_file_text, write_feature_file

P = "sandbox.nodeagent.io/"


def test_nfd_feature_file_is_atomic_idempotent_and_removable(tmp_path):
    host = HostRoot(tmp_path)
    labels = {P + "state": "ready", P + "gvisor": "true"}
    assert write_feature_file(host, labels) is True
    text = host.read_text(FEATURE_FILE)
    assert text.splitlines()[1:] == [f"{P}gvisor=true", f"{P}state=ready"]
    mtime = host.path(FEATURE_FILE).stat().st_mtime_ns
    assert write_feature_file(host, labels) is False  # second run: not even rewritten
    assert host.path(FEATURE_FILE).stat().st_mtime_ns == mtime
    assert [p.name for p in host.path(FEATURE_FILE).parent.iterdir()] == ["nodeagent"]  # no temp files left
    assert write_feature_file(host, {}) is True and not host.exists(FEATURE_FILE)
    assert write_feature_file(host, {}) is False


def test_the_text_is_sorted_name_value_lines_under_a_do_not_edit_comment():
    text = feature_file_text({P + "state": "ready", P + "kvm": "true"})
    assert text == f"# written by nodeagent; do not edit (it is rewritten on every converge)\n{P}kvm=true\n{P}state=ready\n"
