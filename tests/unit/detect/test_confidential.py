"""Facts Kata's shims need (issue 15 item 1): the devmapper snapshotter in containerd's config,
TDX / SEV-SNP in the KVM modules' parameters; and doctor's shim-eligibility check on them."""

from __future__ import annotations

from nodeagent import doctor
from nodeagent.detect import confidential, containerd_config
from nodeagent.host import HostRoot
from nodeagent.settings import Settings

POOL_V2 = b'version = 2\n[plugins."io.containerd.snapshotter.v1.devmapper"]\n  pool_name = "containerd-pool"\n'


def write(root, path, data: bytes):
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def snapshotters(root, version):
    return containerd_config.snapshotters(containerd_config.read(HostRoot(root), "/etc/containerd/config.toml", version),
                                          version)


def test_devmapper_pool_and_cri_snapshotter_from_the_config(tmp_path):
    write(tmp_path, "/etc/containerd/config.toml", POOL_V2 + b'[plugins."io.containerd.grpc.v1.cri".containerd]\n'
                                                           b'  snapshotter = "devmapper"\n')
    assert snapshotters(tmp_path, "1.6.20") == {"devmapper_pool": "containerd-pool", "cri_snapshotter": "devmapper"}
    write(tmp_path, "/etc/containerd/config.toml", b"version = 2\n")
    assert snapshotters(tmp_path, "1.6.20") == {"devmapper_pool": None, "cri_snapshotter": None}
    write(tmp_path, "/etc/containerd/config.toml", b'[plugins.devmapper]\n  pool_name = "old-pool"\n')  # schema 1
    assert snapshotters(tmp_path, "1.6.20")["devmapper_pool"] == "old-pool"


def test_a_dropin_table_replaces_on_1x_and_merges_on_2x(tmp_path):
    """containerd 1.x takes a plugin's table whole from the last file defining it (containerd#5837)."""
    write(tmp_path, "/etc/containerd/config.toml", b"version = 3\nimports = ['/etc/containerd/conf.d/*.toml']\n"
                                                   b"[plugins.'io.containerd.snapshotter.v1.devmapper']\n"
                                                   b"  pool_name = 'pool'\n")
    write(tmp_path, "/etc/containerd/conf.d/x.toml", b"version = 3\n[plugins.'io.containerd.snapshotter.v1.devmapper']\n"
                                                     b"  base_image_size = '10GB'\n")
    assert snapshotters(tmp_path, "2.1.9")["devmapper_pool"] == "pool"
    write(tmp_path, "/etc/containerd/conf.d/x.toml", b'version = 2\n[plugins."io.containerd.snapshotter.v1.devmapper"]\n'
                                                     b'  base_image_size = "10GB"\n')
    write(tmp_path, "/etc/containerd/config.toml", b"version = 2\nimports = ['/etc/containerd/conf.d/x.toml']\n"
                                                   + POOL_V2.removeprefix(b"version = 2\n"))
    assert snapshotters(tmp_path, "1.7.24")["devmapper_pool"] is None


def test_tdx_and_snp_read_the_kvm_module_parameters_under_root(tmp_path):
    assert confidential.probe(HostRoot(tmp_path)) == {"tdx": False, "sev_snp": False}
    write(tmp_path, "/sys/module/kvm_intel/parameters/tdx", b"Y\n")
    write(tmp_path, "/sys/module/kvm_amd/parameters/sev_snp", b"N\n")
    assert confidential.probe(HostRoot(tmp_path)) == {"tdx": True, "sev_snp": False}


def test_doctor_explains_why_a_chosen_shim_cannot_run(tmp_path):
    """An empty root: no KVM, no vhost-vsock, no devmapper; every chosen shim fails with Kata's reasons
    and fc with the devmapper explanation. Without kata_shims the check is skipped."""
    checks = {c.id: c for c in doctor.run_checks(HostRoot(tmp_path), Settings(root=str(tmp_path), kata_shims=["qemu", "fc"]))}
    shim = checks["shim-eligibility"]
    assert shim.status == "fail" and "kata-qemu: KVM is not usable" in shim.summary
    assert "kata-fc:" in shim.summary and "devmapper snapshotter" in shim.summary and "--skip-eligibility" in shim.hint
    plain = {c.id: c for c in doctor.run_checks(HostRoot(tmp_path), Settings(root=str(tmp_path)))}
    assert plain["shim-eligibility"].status == "skip"
