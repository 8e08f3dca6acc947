"""`nodeagent version`: our version and the artifact versions install would pick."""

from __future__ import annotations

from nodeagent import __version__, runtimes as runtime_plugins
from nodeagent.output import Result


def run(settings, args) -> Result:
    versions = {rt.name: rt.version(rt.options(settings)) for rt in runtime_plugins.ALL}
    data = {"nodeagent": __version__, "artifacts": versions}
    text = "\n".join([f"nodeagent {__version__}", *(f"{name} {v}" for name, v in versions.items())])
    return Result(data, text)
