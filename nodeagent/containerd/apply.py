"""Carry a Plan out on the host, and undo it: the only module here that writes.

Order for install: validate the candidate with the real containerd -> check every
target is writable (so a read-only file fails before anything changed) -> back up
originals and record ownership in state.json -> atomic writes (rolled back if one
fails). The caller holds the run lock (fsutil.RunLock at /run/nodeagent.lock).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent import fsutil, state as state_mod
from nodeagent.containerd import edit, model, tomlparse
from nodeagent.containerd.effective import prove_only_ours
from nodeagent.containerd.imports import read_host_file
from nodeagent.containerd.layout import BASE_LINE
from nodeagent.containerd.plan import FileChange, Plan
from nodeagent.containerd.validate import checked_candidate, find_containerd
from nodeagent.errors import HostError
from nodeagent.host import HostRoot


@dataclass
class Outcome:
    files: list[FileChange]
    restart: bool
    notes: list[str] = field(default_factory=list)
    previous_state: bytes | None = None  # state.json before apply_install (for rollback_install)

    @property
    def changed(self) -> bool:
        return any(f.action != "none" for f in self.files)

    def to_json(self) -> dict:
        return {"changed": self.changed, "restart": self.restart,
                "files": [f.to_json() for f in self.files if f.action != "none"], "artifacts": []}


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


# roles of files a containerd config names by path (a runtime's options file, e.g. runsc.toml)
_NAMED_BY_CONFIG = {"runsc"}


def _named_files_first(changes: list[FileChange]) -> list[FileChange]:
    """Install order: a file the config names lands before the config that names it, so a kill
    between the two writes never leaves a config pointing at a missing file (gVisor's shim reads
    runsc.toml for every sandbox). Found by tests/faults/test_kill_points.py."""
    return sorted(changes, key=lambda c: c.role not in _NAMED_BY_CONFIG)


def _write_all(host: HostRoot, changes: list[FileChange]) -> None:
    done: list[FileChange] = []
    try:
        for change in changes:
            if change.action == "none":
                continue
            real = _real(host, change.path)
            if change.new is None:
                fsutil.remove_file(real)
            else:
                fsutil.atomic_write(real, change.new)
            done.append(change)
    except BaseException:
        for change in reversed(done):  # put back what we already replaced
            real = _real(host, change.path)
            if change.old is None:
                fsutil.remove_file(real)
            else:
                fsutil.atomic_write(real, change.old)
        raise


def apply_install(host: HostRoot, plan: Plan, *, containerd_bin: str | None = None) -> Outcome:
    """Validate, then write: prepare_install followed by commit_install."""
    notes = prepare_install(host, plan, containerd_bin=containerd_bin)
    outcome = commit_install(host, plan)
    outcome.notes += [n for n in notes if n not in outcome.notes]
    return outcome


def prepare_install(host: HostRoot, plan: Plan, *, containerd_bin: str | None = None) -> list[str]:
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
                owned = set(plan.added) | set(plan.replaced) | set(plan.defaults_added)
                note = prove_only_ours(host, judged, after, owned, binary, plan.baseline_overrides)
                if note:
                    notes.append(note)
        else:
            notes.append("no containerd binary found: the config was not validated with `config dump`")
    preflight(host, plan.files)
    return notes


def commit_install(host: HostRoot, plan: Plan) -> Outcome:
    """Back up, record ownership, write atomically (a plan already checked by prepare_install)."""
    outcome = Outcome(plan.files, plan.restart, list(plan.notes))
    if not plan.changed:
        return outcome
    outcome.previous_state = host.read_bytes(state_mod.STATE_FILE)
    state = state_mod.load(host)
    for change in plan.files:
        if change.action == "none":
            continue
        record = state.files.get(change.path)
        if record is None:
            record = state_mod.FileRecord(
                path=change.path, role=change.role, created=change.old is None,
                backup=None if change.old is None else state_mod.backup(host, change.path, change.old),
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
    state_mod.save(host, state)  # ownership first: a crash mid-write leaves uninstall able to clean up
    _write_all(host, _named_files_first(plan.files))
    _remove_empty_dirs(host, retired_dirs)
    return outcome


def rollback_install(host: HostRoot, outcome: Outcome) -> None:
    """Undo an apply_install whose result containerd did not accept (e.g. unhealthy after restart):
    every file back to its bytes before, state.json as it was. The caller restarts containerd again."""
    undo = [FileChange(c.path, c.role, c.new, c.old) for c in outcome.files if c.action != "none"]
    _write_all(host, undo)
    if outcome.previous_state is None:
        fsutil.remove_file(host.path(state_mod.STATE_FILE))
    else:
        fsutil.atomic_write(host.path(state_mod.STATE_FILE), outcome.previous_state, mode=0o600)


# -- uninstall ------------------------------------------------------------------------------------


def _remove_ours(text: str, style: edit.TextStyle, record: state_mod.FileRecord, names: set[str]) -> str:
    """Planner path for a file the operator changed after us: take out only our handlers."""
    if record.role == "template":
        for name in sorted(names):
            text = edit.remove_our_blocks(text, name, style)
        return text
    version = model.config_version(tomlparse.parse(text, record.path).get("version"))
    for name in sorted(names):
        text = edit.remove_runtime(text, version, name, style, record.path)
    return text


def plan_uninstall(host: HostRoot, runtimes: set[str] | None, *, flavor: str = "containerd") -> tuple[Outcome, state_mod.State]:
    """What uninstall changes: byte-exact restores where the file is still ours, surgical removal otherwise."""
    state = state_mod.load(host)
    removing = {h for h, rt in state.handlers.items() if runtimes is None or rt in runtimes}
    remaining = {h: rt for h, rt in state.handlers.items() if h not in removing}
    changes: list[FileChange] = []
    notes: list[str] = []
    new_state = state_mod.State(handlers=remaining)
    for path, record in state.files.items():
        current = read_host_file(host, path)
        unchanged = state_mod.sha256(current) == record.written_sha256
        original = None if record.created else host.read_bytes(record.backup) if record.backup else None
        if not record.created and original is None:
            raise HostError(f"the backup of {path} ({record.backup}) is missing", "restore the file by hand")
        if record.role == "runsc":
            if "gvisor" in remaining.values():
                new_state.files[path] = record
            elif unchanged:
                changes.append(FileChange(path, record.role, current, original))
            else:
                notes.append(f"{path} was changed after nodeagent wrote it; left in place")
            continue
        ours_left = [h for h in record.handlers if h not in removing]
        for entry in record.imports_added:  # an imports entry stays while the drop-in serves a handler
            served = state.files[entry].handlers if entry in state.files else []
            ours_left += [h for h in served if h not in removing and h not in ours_left]
        if not ours_left and unchanged:
            changes.append(FileChange(path, record.role, current, original))
            continue
        if current is None:
            notes.append(f"{path} no longer exists; nothing to remove there")
            continue
        text, style = edit.decode(current, path)
        new_text = _remove_ours(text, style, record, {h for h in record.handlers if h in removing})
        if not ours_left:
            if record.defaults_added:  # back to containerd's implicit default
                new_text = _remove_ours(new_text, style, record, set(record.defaults_added))
            for entry in record.imports_added:
                new_text = edit.remove_import(new_text, entry, path, drop_empty_line=record.imports_line_created)
            if not unchanged:
                notes.append(f"{path} was changed after nodeagent wrote it: removed only nodeagent's handlers")
            if record.replaced:
                notes.append(f"handler(s) {', '.join(sorted(record.replaced))} replaced with --force are in the "
                             f"backup {record.backup}")
        new = edit.encode(new_text, style)
        if record.created and not ours_left and _only_skeleton(new_text):
            new = None
        changes.append(FileChange(path, record.role, current, new))
        if ours_left:
            record.handlers = ours_left
            record.written_sha256 = state_mod.sha256(new)
            new_state.files[path] = record
    restart = flavor != "k0s" and any(c.action != "none" and c.role != "runsc" for c in changes)
    return Outcome(changes, restart, notes), new_state


def _only_skeleton(text: str) -> bool:
    body = [line.strip() for line in text.splitlines()]
    return all(not line or line.startswith("#") or line.startswith("version") or line == BASE_LINE.strip()
               for line in body)


def _missing_dirs(host: HostRoot, path: str) -> list[str]:
    """Host dirs above `path` that do not exist yet, deepest first."""
    missing = []
    parent = path.rsplit("/", 1)[0]
    while parent and not host.exists(parent):
        missing.append(parent)
        parent = parent.rsplit("/", 1)[0]
    return missing


def _remove_empty_dirs(host: HostRoot, dirs: list[str]) -> None:
    for directory in dirs:  # deepest first; stop at the first one someone else put files in
        try:
            os.rmdir(host.path(directory))
        except OSError:
            return


def apply_uninstall(host: HostRoot, outcome: Outcome, new_state: state_mod.State) -> None:
    preflight(host, outcome.files)
    _write_all(host, outcome.files)
    old_state = state_mod.load(host)
    for change in outcome.files:
        record = old_state.files.get(change.path)
        if change.action == "delete" and record is not None:
            _remove_empty_dirs(host, record.created_dirs)
    if new_state.files or new_state.handlers:
        state_mod.save(host, new_state)
    else:
        fsutil.remove_file(host.path(state_mod.STATE_FILE))
