"""`nodeagent version`: our version and the artifact versions install would pick."""

from __future__ import annotations

from nodeagent import __version__
from nodeagent.output import Result


def run(settings, args) -> Result:
    data = {
        "nodeagent": __version__,
        "artifacts": {"gvisor": settings.gvisor_version, "kata": settings.kata_version},
    }
    text = f"nodeagent {__version__}\ngvisor {settings.gvisor_version}\nkata {settings.kata_version}"
    return Result(data, text)
