"""`nodeagent bundle --runtime ... --arch ... DIR`: an offline mirror for air-gapped nodes."""

from __future__ import annotations

from nodeagent.artifacts import catalog
from nodeagent.artifacts.bundle import write_bundle
from nodeagent.output import Result, table
from nodeagent.runtimes import selected


def run(settings, args) -> Result:
    runtimes = selected(settings.runtime)
    arches = list(dict.fromkeys(args.arch or [catalog.host_arch()]))
    result = write_bundle(settings, runtimes, arches, args.dir)
    rows = [[f["action"], f["path"]] for f in result.files]
    text = f"bundle in {result.directory}\n" + table(rows, ["action", "file"])
    if result.pins:
        text += f"\npins in {result.pins}: carry it to the nodes apart from the mirror and pass --pins {result.pins}\n"
    return Result(result.as_dict(), text)
