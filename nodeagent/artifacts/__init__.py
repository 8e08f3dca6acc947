"""Artifacts: download, verify, cache and install gVisor and Kata — online or air-gapped.

Public API (all take a nodeagent.host.HostRoot and nodeagent.settings.Settings; the caller
holds the run lock around the calls that write):

- ``plan_artifact(host, settings, runtime, arch=None) -> ArtifactPlan(runtime, version, action)``
  action is "download" | "cached" | "installed" (version dir exists, links move) | "none".
  Reads at most small digest files (or Kata's release listing); never downloads an artifact, never writes.
- ``ensure_artifact(host, settings, runtime, arch=None, progress="auto", journal=None) -> ArtifactResult``
  (runtime, version, action, install_dir, pruned, kept_in_use). Raises ArtifactError /
  ConflictError (exit 2, with a hint) and then leaves the host as it was.
- ``remove_artifact(host, runtime, force=False) -> RemoveResult(runtime, removed, restored)``
- ``artifacts_in_use(host, runtime) -> list[int]`` and ``prune_artifact(host, runtime)``.
- ``write_bundle(settings, runtimes, arches, directory) -> BundleResult`` (``nodeagent bundle``).

`arch` is the contract's spelling (amd64, arm64, s390x, ppc64le), e.g. detect's "arch";
it defaults to this machine's. gVisor `latest` is installed under the concrete release
that the verified runsc reports (`runsc --version`), else under `latest-<digest prefix>`,
so a moving `latest` never overwrites a directory in place.
"""

# Imported lazily (PEP 562) so `import nodeagent.artifacts.download` stays cheap.
_EXPORTS = {
    "ArtifactPlan": "api",
    "ArtifactResult": "api",
    "RemoveResult": "api",
    "artifacts_in_use": "api",
    "check_settings": "api",
    "ensure_artifact": "api",
    "fetch_options": "api",
    "plan_artifact": "api",
    "prune_artifact": "api",
    "remove_artifact": "api",
    "BundleResult": "bundle",
    "write_bundle": "bundle",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"nodeagent.artifacts.{_EXPORTS[name]}"), name)
