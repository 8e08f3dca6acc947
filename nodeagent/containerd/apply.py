"""Carry a Plan out on the host: the only module here that writes containerd's config.

Install, in the steps of certbot's Installer: `config_test` (validate the candidate with the
real containerd, check every target is writable, so a read-only file fails before anything
changed) -> `save` (back up originals, record ownership in state.json, atomic writes); the
restart and rollback steps are converge's. Every write is registered in the caller's
undo journal (nodeagent/journal.py) before it is made; rolling back is the journal's job.
The caller holds the run lock (fsutil.RunLock at /run/nodeagent.lock).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nodeagent import fsutil, runtimes as runtime_plugins, state as state_mod
from nodeagent.containerd.effective import prove_only_ours
from nodeagent.containerd.plan import FileChange, Outcome, Plan
from nodeagent.containerd.validate import checked_candidate, find_containerd
from nodeagent.errors import HostError
from nodeagent.host import HostRoot
from nodeagent.journal import Journal


def lock(host: HostRoot) -> fsutil.RunLock:
    return fsutil.RunLock(host.path(state_mod.LOCK_FILE))


def _real(host: HostRoot, path: str) -> Path:
    return host.resolve(path)


def _is_mount_point(path: Path) -> bool:
    """True when `path` itself is mounted over (e.g. a bind-mounted file), per /proc/self/mountinfo.

    Comparing st_dev with the parent's cannot tell: overlayfs (kind nodes, container roots, the
    test harness) reports the underlying layer's device for files and its own for directories.
    """
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split(" ")
                if len(fields) < 5:
                    continue
                if re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]) == target:
                    return True
    except OSError:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    return False


def preflight(host: HostRoot, changes: list[FileChange]) -> None:
    """Refuse before touching anything when a target cannot be replaced atomically."""
    for change in changes:
        if change.action == "none":
            continue
        real = _real(host, change.path)
        directory = real.parent
        while not directory.exists():
            directory = directory.parent
        problems = []
        if os.statvfs(directory).f_flag & os.ST_RDONLY or not os.access(directory, os.W_OK):
            problems.append(f"its directory {directory} is read-only")
        if real.is_dir():  # e.g. --containerd-config naming a directory (found by tests/test_bad_input_catalogue.py)
            problems.append("it is a directory, not a file")
        elif real.exists():
            if os.statvfs(real).f_flag & os.ST_RDONLY:
                problems.append("it is on a read-only mount")
            elif _is_mount_point(real):
                problems.append("it is a mount point (bind-mounted file) and cannot be replaced atomically")
        if problems:
            raise HostError(
                f"cannot write {change.path}: {'; '.join(problems)}",
                "make it writable (remount read-write), or register the handlers by hand; nothing was changed",
            )


def _named_files_first(changes: list[FileChange]) -> list[FileChange]:
    """Install order: a file the config names lands before the config that names it, so a kill
    between the two writes never leaves a config pointing at a missing file (gVisor's shim reads
    runsc.toml for every sandbox). Found by tests/faults/test_kill_points.py."""
    return sorted(changes, key=lambda c: c.role not in runtime_plugins.option_roles())  # a runtime's options file, e.g. runsc.toml


def _write_all(host: HostRoot, changes: list[FileChange], journal: Journal) -> None:
    """Write each change atomically, its old bytes (and any directory created for it) registered first."""
    for change in changes:
        if change.action == "none":
            continue
        real = _real(host, change.path)
        if change.new is not None:
            journal.mkdirs(real.parent)
        journal.write(real, change.new)


def apply_install(host: HostRoot, plan: Plan, *, containerd_bin: str | None = None) -> Outcome:
    """Validate, then write: config_test followed by save."""
    notes = config_test(host, plan, containerd_bin=containerd_bin)
    outcome = save(host, plan)
    outcome.notes += [n for n in notes if n not in outcome.notes]
    return outcome


def config_test(host: HostRoot, plan: Plan, *, containerd_bin: str | None = None) -> list[str]:
    """Everything that can refuse the plan, with nothing written: the real containerd's
    `config dump` of the candidate, and a writability check of every target. The installer
    runs this before fetching artifacts, so bad input leaves the host byte-identical."""
    notes: list[str] = []
    if not plan.changed:
        return notes
    overrides = plan.validation_overrides
    if overrides:
        binary = find_containerd(host, plan.flavor, containerd_bin)
        if binary:
            judged = plan.layout.validate_path or plan.config_path
            after = checked_candidate(host, judged, overrides, [h.name for h in plan.handlers], binary)
            if not plan.layout.validate_path:  # k0s merges its drop-ins itself: no chain to compare
                owned = set(plan.added) | set(plan.replaced) | set(plan.defaults_added) | set(plan.dropped)
                if plan.layout.kind == "template":
                    # k3s renders the template only when it starts: today's rendered config lacks
                    # the handlers our template already holds, so the candidate shows them as new
                    owned |= {spec.name for spec in plan.handlers}
                note = prove_only_ours(host, judged, after, owned, binary, plan.baseline_overrides)
                if note:
                    notes.append(note)
        else:
            notes.append("no containerd binary found: the config was not validated with `config dump`")
    preflight(host, plan.files)
    return notes


def save(host: HostRoot, plan: Plan, journal: Journal | None = None) -> Outcome:
    """Back up, record ownership, write atomically (a plan already checked by config_test).

    Every write is registered in `journal` before it is made, so the installer can undo all of
    it (state.json and backups included) when containerd does not accept the result. Without a
    journal, a failed write undoes the writes before it and re-raises."""
    if journal is None:
        with Journal() as own:
            return save(host, plan, own)
    outcome = Outcome(plan.files, plan.restart, list(plan.notes))
    if not plan.changed:
        return outcome
    state, retired_dirs = _record_ownership(host, plan, journal)
    state_mod.save(host, state, journal)  # ownership first: a crash mid-write leaves uninstall able to clean up
    _write_all(host, _named_files_first(plan.files), journal)
    _remove_empty_dirs(host, retired_dirs, journal)
    return outcome


def _record_ownership(host: HostRoot, plan: Plan, journal: Journal) -> tuple[state_mod.State, list[str]]:
    """state.json as it must read after the plan is written (backups of originals made now),
    and the directories of drop-ins the plan retires."""
    state = state_mod.load(host)
    for change in plan.files:
        if change.action == "none":
            continue
        record = state.files.get(change.path)
        if record is None:
            record = state_mod.FileRecord(
                path=change.path, role=change.role, created=change.old is None,
                backup=None if change.old is None else state_mod.backup(host, change.path, change.old, journal),
                written_sha256=None, created_dirs=_missing_dirs(host, change.path),
            )
            state.files[change.path] = record
        record.written_sha256 = state_mod.sha256(change.new)
        hosts_ours = change.path == plan.layout.path or any(p == change.path for p, _ in plan.imports_added)
        if hosts_ours:  # the file with our tables, or the one importing it: both stay ours while they serve
            record.handlers = sorted(set(record.handlers) | set(plan.added))
            record.replaced.update(plan.replaced)
            if change.path == plan.layout.path:
                record.defaults_added = sorted(set(record.defaults_added) | set(plan.defaults_added))
        record.imports_added += [entry for (path, entry) in plan.imports_added if path == change.path]
        record.imports_line_created |= change.path in plan.imports_line_created
    retired_dirs: list[str] = []
    for importer, entry in plan.imports_removed:  # a retired drop-in of ours (containerd downgraded)
        record = state.files.get(importer)
        if record is not None and entry in record.imports_added:
            record.imports_added.remove(entry)
        if entry in state.files and state.files[entry].created:
            retired_dirs += state.files.pop(entry).created_dirs
    for spec in plan.handlers:
        if spec.name in plan.added:
            state.handlers[spec.name] = spec.runtime
    _forget(state, plan.dropped)
    return state, retired_dirs


def _forget(state: state_mod.State, dropped: list[str]) -> None:
    """Handlers the plan took out (no longer asked for) are no longer ours to remove later."""
    for name in dropped:
        state.handlers.pop(name, None)
    for record in state.files.values():
        record.handlers = [h for h in record.handlers if h not in dropped]


# -- uninstall ------------------------------------------------------------------------------------


def _missing_dirs(host: HostRoot, path: str) -> list[str]:
    """Host dirs above `path` that do not exist yet, deepest first."""
    missing = []
    parent = path.rsplit("/", 1)[0]
    while parent and not host.exists(parent):
        missing.append(parent)
        parent = parent.rsplit("/", 1)[0]
    return missing


def _remove_empty_dirs(host: HostRoot, dirs: list[str], journal: Journal) -> None:
    for directory in dirs:  # deepest first; stop at the first one someone else put files in
        try:
            journal.rmdir(host.path(directory))
        except OSError:
            return


def apply_uninstall(host: HostRoot, outcome: Outcome, new_state: state_mod.State,
                    journal: Journal | None = None) -> None:
    """Write an uninstall plan (from plan.plan_uninstall); every write registered in `journal`
    first, so a containerd that does not come back healthy gets the old files and state back."""
    if journal is None:
        with Journal() as own:
            return apply_uninstall(host, outcome, new_state, own)
    preflight(host, outcome.files)
    old_state = state_mod.load(host)
    _write_all(host, outcome.files, journal)
    for change in outcome.files:
        record = old_state.files.get(change.path)
        if change.action == "delete" and record is not None:
            _remove_empty_dirs(host, record.created_dirs, journal)
    if new_state.files or new_state.handlers:
        state_mod.save(host, new_state, journal)
    else:
        journal.write(host.path(state_mod.STATE_FILE), None)
