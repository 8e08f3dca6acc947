"""`nodeagent plan`, `install` and `uninstall`: thin wrappers over nodeagent.converge."""

from __future__ import annotations

import structlog

from nodeagent import converge
from nodeagent.output import Result
from nodeagent.settings import Settings

log = structlog.get_logger(__name__)


def _result(report: converge.Report) -> Result:
    for warning in report.warnings:
        log.warning(warning)
    return Result(report.to_json(), report.render_text, warnings=report.warnings)


def plan(settings: Settings, args=None) -> Result:
    return _result(converge.plan(settings))


def install(settings: Settings, args=None) -> Result:
    if settings.dry_run:
        return plan(settings, args)
    return _result(converge.install(settings))


def uninstall(settings: Settings, args=None) -> Result:
    return _result(converge.uninstall(settings))
