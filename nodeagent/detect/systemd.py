"""Is systemd the running init (sd_booted: /run/systemd/system exists) and is it installed?

Installed-but-not-running matters: `SystemdCgroup = true` and `systemctl restart` both fail then.
"""

from __future__ import annotations

from typing import Any

from nodeagent.host import HostRoot


def probe(host: HostRoot) -> dict[str, Any]:
    marker = host.confined("/run/systemd/system")  # links followed inside the root only
    running = marker is not None and marker.is_dir()
    installed = any(host.exists(p) for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd"))
    return {"running": running, "installed": installed or running}
