"""Optional: publish the labels through node-feature-discovery's local feature files.

For clusters that label nodes only through NFD (no Node patch rights for agents), nfd-worker
reads `name=value` lines from /etc/kubernetes/node-feature-discovery/features.d/. Names that carry
our prefix need the prefix allowed on nfd-master (`-extra-label-ns sandbox.nodeagent.io`).
The file is replaced atomically through a dot-named temp file, which nfd-worker ignores.
"""

from __future__ import annotations

from typing import Mapping

from nodeagent import fsutil
from nodeagent.host import HostRoot

FEATURES_DIR = "/etc/kubernetes/node-feature-discovery/features.d"
FEATURE_FILE = f"{FEATURES_DIR}/nodeagent"


def feature_file_text(labels: Mapping[str, str]) -> str:
    head = "# written by nodeagent; do not edit (it is rewritten on every converge)\n"
    return head + "".join(f"{k}={v}\n" for k, v in sorted(labels.items()))


def write_feature_file(host: HostRoot, labels: Mapping[str, str]) -> bool:
    """Write (or with no labels, remove) the feature file; True if anything changed on disk."""
    path = host.path(FEATURE_FILE)
    if not labels:
        return fsutil.remove_file(path)
    text = feature_file_text(labels)
    if host.read_text(FEATURE_FILE) == text:
        return False
    fsutil.atomic_write(path, text.encode(), mode=0o644)
    return True
