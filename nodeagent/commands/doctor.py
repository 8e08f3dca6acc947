"""`nodeagent doctor`: run the checks, print a table (or JSON), exit 0 ok / 1 warn / 2 fail."""

from __future__ import annotations

from nodeagent import doctor
from nodeagent.errors import EXIT_FAIL, EXIT_OK, EXIT_WARN
from nodeagent.host import HostRoot
from nodeagent.output import Result

_EXIT = {doctor.OK: EXIT_OK, doctor.WARN: EXIT_WARN, doctor.FAIL: EXIT_FAIL}


def run(settings, args) -> Result:
    checks = doctor.run_checks(HostRoot(settings.root), settings)
    status = doctor.overall(checks)
    data = {"status": status, "checks": [c.as_dict() for c in checks]}
    return Result(data, lambda: doctor.render_text(checks), exit_code=_EXIT[status])
