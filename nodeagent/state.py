"""What nodeagent owns on this host, so uninstall removes exactly that and nothing else.

<root>/var/lib/nodeagent/state.json (written atomically) records, per file we touched:
whether we created it, where the original bytes are backed up, the sha256 of what we
wrote (to notice later operator edits), which handlers it holds for us, `imports`
entries we added and handler tables --force replaced.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nodeagent import fsutil
from nodeagent.errors import HostError
from nodeagent.host import HostRoot
from nodeagent.journal import Journal

STATE_DIR = "/var/lib/nodeagent"
STATE_FILE = f"{STATE_DIR}/state.json"
BACKUP_DIR = f"{STATE_DIR}/backups"
LOCK_FILE = "/run/nodeagent.lock"


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


@dataclass
class FileRecord:
    path: str
    role: str
    created: bool
    backup: str | None  # host path of the original bytes (None when we created the file)
    written_sha256: str | None
    handlers: list[str] = field(default_factory=list)
    imports_added: list[str] = field(default_factory=list)
    imports_line_created: bool = False
    defaults_added: list[str] = field(default_factory=list)  # e.g. runc, made explicit on containerd 1.x
    created_dirs: list[str] = field(default_factory=list)  # parent dirs we made for it (removed if empty)
    replaced: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class State:
    files: dict[str, FileRecord] = field(default_factory=dict)
    handlers: dict[str, str] = field(default_factory=dict)  # handler name -> runtime (gvisor|kata)

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "files": {p: asdict(r) for p, r in self.files.items()}, "handlers": self.handlers}


def load(host: HostRoot) -> State:
    raw = host.read_bytes(STATE_FILE)
    if raw is None:
        return State()
    try:
        return _parse(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise HostError(
            f"{host.path(STATE_FILE)} is corrupt ({exc})",
            "restore it from a backup or move it aside (nodeagent then forgets what it owns)",
        ) from None


# FileRecord's JSON keys and the types each may hold (None only where the field allows it)
_RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "path": (str,), "role": (str,), "created": (bool,), "backup": (str, type(None)),
    "written_sha256": (str, type(None)), "handlers": (list,), "imports_added": (list,),
    "imports_line_created": (bool,), "defaults_added": (list,), "created_dirs": (list,), "replaced": (dict,),
}
_REQUIRED = ("path", "role", "created", "backup", "written_sha256")


def _parse(data: Any) -> State:
    """A State from decoded JSON, every part of its shape checked: valid JSON of the wrong shape
    (a list, a list where an object belongs, a wrong type, an unknown key) raises ValueError
    rather than escaping later as an AttributeError from deep inside uninstall."""
    _require(isinstance(data, dict), "not a JSON object")
    unknown = sorted(set(data) - {"version", "files", "handlers"})
    _require(not unknown, f"unknown key(s) {', '.join(unknown)}")
    _require(data.get("version", 1) == 1 and type(data.get("version", 1)) is int,
             f"unsupported version {data.get('version')!r}")
    files, handlers = data.get("files", {}), data.get("handlers", {})
    _require(isinstance(files, dict), '"files" is not an object')
    _require(isinstance(handlers, dict) and all(isinstance(v, str) for v in handlers.values()),
             '"handlers" is not an object of handler name -> runtime')
    return State(files={path: _record(path, r) for path, r in files.items()}, handlers=dict(handlers))


def _record(path: str, data: Any) -> FileRecord:
    _require(isinstance(data, dict), f"the record of {path} is not an object")
    unknown = sorted(set(data) - set(_RECORD_FIELDS))
    _require(not unknown, f"the record of {path} has unknown key(s) {', '.join(unknown)}")
    missing = [key for key in _REQUIRED if key not in data]
    _require(not missing, f"the record of {path} lacks {', '.join(missing)}")
    for key, value in data.items():
        allowed = _RECORD_FIELDS[key]
        # bool is an int subclass, and an int is no bool: compare exact types
        _require(type(value) in allowed, f"{key} of {path} is a {type(value).__name__}")
        if isinstance(value, list):
            _require(all(isinstance(v, str) for v in value), f"{key} of {path} holds a non-string")
        if isinstance(value, dict):
            _require(all(isinstance(v, dict) for v in value.values()), f"{key} of {path} holds a non-object")
    return FileRecord(**data)


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)


def private_dir(host: HostRoot, path: str = STATE_DIR, journal: Journal | None = None) -> None:
    """Create nodeagent's state directories 0700 (their parents 0755), whatever the umask:
    backups are restored by uninstall, so no other user may swap one."""
    make_dirs = fsutil.make_dirs if journal is None else journal.mkdirs
    make_dirs(host.path(posixpath.dirname(STATE_DIR)), 0o755)
    make_dirs(host.path(path), 0o700)


def encode(state: State) -> bytes:
    return json.dumps(state.to_json(), indent=2, sort_keys=True).encode() + b"\n"


def save(host: HostRoot, state: State, journal: Journal | None = None) -> None:
    """Write state.json (registered in `journal` first, when given, so a rollback restores it)."""
    private_dir(host, journal=journal)
    write = fsutil.atomic_write if journal is None else journal.write
    write(host.path(STATE_FILE), encode(state), mode=0o600)


def backup(host: HostRoot, path: str, data: bytes, journal: Journal | None = None) -> str:
    """Keep the original bytes of a file we are about to modify; returns the backup's host path."""
    name = path.strip("/").replace("/", "__")
    target = f"{BACKUP_DIR}/{name}.{time.strftime('%Y%m%dT%H%M%S')}.{sha256(data)[:12]}"
    private_dir(host, BACKUP_DIR, journal)
    write = fsutil.atomic_write if journal is None else journal.write
    write(host.path(target), data, mode=0o600)
    return target
