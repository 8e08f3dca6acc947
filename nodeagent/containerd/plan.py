"""The pure planner: current files + desired handlers + facts -> a Plan (new bytes, diffs, restart).

Nothing here writes. `plan`, `install --dry-run`, `install` and the tests all go through
`plan_install`; `apply.py` carries a Plan out. `plan_uninstall` is the same for uninstall:
byte-exact restores where a file is still ours, surgical removal of our handlers otherwise. Where the edit goes is decided by
`layout.choose` (in place on containerd 1.x, a drop-in on 2.x, flavor templates).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from nodeagent.containerd import edit, layout, model, tomlparse
from nodeagent.containerd.downgrade import retire_2x_dropins
from nodeagent.containerd.imports import LoadedFile, load_chain, read_host_file
from nodeagent.containerd.inspect import containerd_major, decoded_option, default_runtime_name, effective_runtimes
from nodeagent import state as state_mod
from nodeagent.dicts import dig
from nodeagent.errors import ConfigError, ConflictError, HostError
from nodeagent.facts import HostFacts
from nodeagent.host import HostRoot
from nodeagent import runtimes as runtime_plugins
from nodeagent.runtimes.base import ConfigContext


@dataclass
class FileChange:
    """One file's planned change; `old`/`new` None mean absent."""

    path: str
    role: str  # config | dropin | template | runsc
    old: bytes | None
    new: bytes | None

    @property
    def action(self) -> str:
        if self.old == self.new:
            return "none"
        if self.old is None:
            return "create"
        if self.new is None:
            return "delete"
        return "modify"

    @property
    def diff(self) -> str:
        if self.action == "none":
            return ""
        old = _text(self.old).splitlines(keepends=True)
        new = _text(self.new).splitlines(keepends=True)
        lines = difflib.unified_diff(
            old, new, fromfile="/dev/null" if self.old is None else self.path,
            tofile="/dev/null" if self.new is None else self.path,
        )
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "action": self.action, "diff": self.diff}


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", errors="replace")


@dataclass
class Plan:
    flavor: str
    containerd_version: str | None
    config_path: str  # the config containerd reads (validated after the change)
    layout: layout.Layout
    files: list[FileChange] = field(default_factory=list)
    handlers: list[model.HandlerSpec] = field(default_factory=list)  # what the result registers
    added: list[str] = field(default_factory=list)  # handler names written by this plan
    replaced: dict[str, dict[str, Any]] = field(default_factory=dict)  # --force: name -> old table
    imports_added: list[tuple[str, str]] = field(default_factory=list)  # (file, entry)
    imports_line_created: set[str] = field(default_factory=set)  # files that had no `imports` key
    defaults_added: list[str] = field(default_factory=list)  # containerd defaults we made explicit (runc)
    notes: list[str] = field(default_factory=list)
    validation_overrides: dict[str, bytes | None] = field(default_factory=dict)
    imports_removed: list[tuple[str, str]] = field(default_factory=list)  # (file, entry): our retired drop-ins
    baseline_overrides: dict[str, bytes | None] = field(default_factory=dict)  # what "before" means for the proof
    updated: list[str] = field(default_factory=list)  # nodeagent's own handlers rewritten with a newer table
    dropped: list[str] = field(default_factory=list)  # nodeagent's own handlers the options no longer ask for

    @property
    def changed(self) -> bool:
        return any(f.action != "none" for f in self.files)

    @property
    def restart(self) -> bool:
        """containerd must restart when what it loads changed (runsc.toml is read per sandbox)."""
        if not self.layout.needs_restart:
            return False
        return any(f.action != "none" and f.role not in runtime_plugins.option_roles() for f in self.files)

    def overrides(self) -> dict[str, bytes | None]:
        return {f.path: f.new for f in self.files}

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "restart": self.restart,
            "files": [f.to_json() for f in self.files if f.action != "none"],
            "artifacts": [],
        }

    def render_text(self) -> str:
        out = []
        for change in self.files:
            if change.action != "none":
                out.append(change.diff.rstrip("\n"))
        summary = [
            f"containerd: {self.flavor} {self.containerd_version or '(version unknown)'}, config {self.config_path}",
            f"layout: {self.layout.describe()}",
        ]
        for change in self.files:
            summary.append(f"  {change.action:7} {change.path}")
        summary.append(f"changed: {'yes' if self.changed else 'no'}; containerd restart: {'yes' if self.restart else 'no'}")
        summary += [f"note: {n}" for n in self.notes]
        return "\n".join(out + summary)


def compatible(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Every key we need is there with our value; extra operator keys are fine."""
    for key, value in wanted.items():
        if isinstance(value, dict):
            if not isinstance(existing.get(key), dict) or not compatible(existing[key], value):
                return False
        elif existing.get(key) != value:
            return False
    return True


def check_schema(chain: list[LoadedFile], major: int = 2) -> None:
    """Refuse what containerd would silently ignore or refuse: a v2 CRI table inside a v3 config,
    any version 3 file under containerd 1.x (1.6 drops its tables, 1.7 refuses to start)."""
    for item in chain:
        if major < 2 and item.version >= 3:
            raise ConfigError(
                f"{item.path} is a version {item.version} config, but containerd 1.x only reads versions 1 and 2 "
                "(1.6 silently drops v3 tables, 1.7 refuses to start)",
                "use `version = 2` with plugins.\"io.containerd.grpc.v1.cri\" for containerd 1.x",
            )
        if item.version >= 3:
            for old in (model.cri_runtime_plugin(1), model.cri_runtime_plugin(2)):
                if isinstance(dig(item.data, "plugins", old, "containerd"), dict):
                    raise ConfigError(
                        f"{item.path} is a version {item.version} config but holds `plugins.\"{old}\".containerd` "
                        "tables, which containerd 2.x ignores",
                        f"move them to plugins.\"{model.cri_runtime_plugin(3)}\" (`containerd config migrate` does it)",
                    )


def systemd_cgroup_of(fact: bool | None, runtimes: dict[str, dict[str, Any]], default: str = "runc") -> bool:
    """The node's cgroup driver: the detection fact when known, else the default runtime's
    effective SystemdCgroup (kubelet's driver matches the runtime most pods use: EKS' GPU nodes
    set it on `nvidia`, their default, and leave runc's unset)."""
    if fact is not None:
        return bool(fact)
    table = runtimes.get(default) or runtimes.get("runc") or {}
    return decoded_option(table.get("options"), "SystemdCgroup") is True


class _Files:
    """Current and planned contents, read lazily through the host root."""

    def __init__(self, host: HostRoot):
        self.host = host
        self.old: dict[str, bytes | None] = {}
        self.new: dict[str, bytes | None] = {}
        self.roles: dict[str, str] = {}

    def current(self, path: str) -> bytes | None:
        if path not in self.old:
            self.old[path] = read_host_file(self.host, path)
        return self.new[path] if path in self.new else self.old[path]

    def set(self, path: str, data: bytes | None, role: str) -> None:
        self.current(path)
        self.new[path] = data
        self.roles.setdefault(path, role)

    def changes(self) -> list[FileChange]:
        return [FileChange(p, self.roles[p], self.old[p], self.new[p]) for p in self.new]


def _edit_text(files: _Files, path: str, role: str, func) -> None:
    raw = files.current(path) or b""
    text, style = edit.decode(raw, path)
    new_text = func(text, style)
    if new_text != text:
        files.set(path, edit.encode(new_text, style), role)


def plan_install(
    host: HostRoot,
    handlers: list[model.HandlerSpec],
    facts: HostFacts,
    *,
    config_path: str | None = None,
    force: bool = False,
    runtime_options: Mapping[str, Any] | None = None,
    owned: Mapping[str, str] | None = None,
    state: state_mod.State | None = None,
) -> Plan:
    """What install would change so containerd serves `handlers` (pure: reads, never writes).

    `state` (state.json): what nodeagent registered before. Its handlers count as `owned`, and
    those of a runtime in `handlers` that `handlers` no longer names are taken out again."""
    if state is not None and owned is None:
        owned = state.handlers
    cfacts = facts.containerd
    flavor = cfacts.flavor or "containerd"
    config_path = config_path or cfacts.config_path or layout.default_config(flavor)
    config_path = layout.source_of(host, flavor, config_path)
    missing_ok = containerd_major(cfacts.version, 1) >= 2  # 2.x skips a missing plain import
    files = _Files(host)
    created_main = flavor == "containerd" and read_host_file(host, config_path) is None
    if created_main:
        # No config file: containerd runs on built-in defaults. Start one (schema of that version)
        # and put the handlers straight into it; uninstall deletes it again.
        files.set(config_path, (
            "# containerd config created by nodeagent: none existed, so containerd ran on its defaults\n"
            f"version = {3 if missing_ok else 2}\n").encode(), "config")
    chain = load_chain(host, config_path, dict(files.new), missing_ok=missing_ok)
    major = containerd_major(cfacts.version, max(item.version for item in chain))
    check_schema(chain, major)
    retired = retire_2x_dropins(host, chain, files) if major < 2 else []
    if retired:
        chain = load_chain(host, config_path, dict(files.new), missing_ok=missing_ok)
    baseline = dict(files.new) if retired else {}
    chosen = layout.choose(host, flavor, config_path, chain, major)
    if created_main:
        chosen = layout.Layout("inplace", config_path, chain[0].version, "config")
    plan = Plan(flavor, cfacts.version, config_path, chosen, handlers=list(handlers),
                imports_removed=retired, baseline_overrides=baseline)
    if retired:
        plan.notes.append("containerd 1.x would let nodeagent's 2.x drop-in replace the whole CRI section "
                          "(containerd#5837): its handlers move into " + chosen.path)
    effective = effective_runtimes(chain, major)
    if chosen.validate_path:  # k0s: its drop-ins are merged by k0s, not through `imports`
        effective.update(_dropin_dir_runtimes(host, chosen.path))
    effective.update(chosen.template_runtimes(files))

    to_add = _handlers_to_add(plan, files, chain, effective, force, owned or {})
    if to_add and major < 2 and not effective and chosen.kind == "inplace":
        # containerd 1.x fills in its built-in `runc` handler only while no handler is configured:
        # adding ours would silently drop runc (the default runtime) and break the CRI plugin.
        to_add.insert(0, edit.DEFAULT_RUNC)
        plan.notes.append("containerd 1.x drops its built-in runc handler once others are configured; "
                          "nodeagent writes runc's default table explicitly")
    if to_add:
        chosen.prepare(files, plan)
        for spec in to_add:
            _edit_text(files, chosen.path, chosen.role, lambda text, style, s=spec: chosen.add(text, s, style))
            if spec in handlers:
                plan.added.append(spec.name)
            else:
                plan.defaults_added.append(spec.name)

    if state is not None:
        _drop_unwanted_own(plan, files, state)

    _plan_option_files(files, handlers, runtime_options or {},
                       ConfigContext(facts, systemd_cgroup_of(cfacts.systemd_cgroup, effective, default_runtime_name(chain, major))))

    plan.files = files.changes()
    plan.validation_overrides = chosen.validation_overrides(files, plan)
    _self_check(host, plan, major)
    return plan


def _plan_option_files(files: _Files, handlers: list[model.HandlerSpec], options: Mapping[str, Any],
                       ctx: ConfigContext) -> None:
    """The option files (e.g. gVisor's runsc.toml) of each runtime that has a handler here."""
    wanted = {spec.runtime for spec in handlers}
    for rt in runtime_plugins.ALL:
        if rt.name not in wanted:
            continue
        opts = options.get(rt.name) or rt.default_options()
        for option_file in rt.config_files(files.current, ctx, opts):
            if option_file.new != files.current(option_file.path):
                files.set(option_file.path, option_file.new, option_file.role)


def _handlers_to_add(plan: Plan, files: _Files, chain: list[LoadedFile], effective: dict[str, dict[str, Any]],
                     force: bool, owned: Mapping[str, str]) -> list[model.HandlerSpec]:
    """The handlers missing from `effective`; a differing one is refused, or replaced with --force.

    A handler nodeagent registered itself (`owned`: the state's handler -> runtime) is rewritten
    when its table changed between nodeagent versions (e.g. gVisor's pod_annotations)."""
    to_add: list[model.HandlerSpec] = []
    for spec in plan.handlers:
        existing = effective.get(spec.name)
        ours = owned.get(spec.name) == spec.runtime
        if existing is None:
            to_add.append(spec)
        elif compatible(existing, spec.table() if ours else spec.required_table()):
            continue
        elif ours:
            plan.notes.append(f"nodeagent's own handler {spec.name!r} is updated: "
                              f"{', '.join(differing_keys(existing, spec.table()))}")
            _remove_older_own(plan, files, chain, spec.name)
            plan.updated.append(spec.name)
            to_add.append(spec)
        elif not force:
            raise ConflictError(
                f"containerd already has a handler {spec.name!r} that differs from nodeagent's: "
                f"{', '.join(differing_keys(existing, spec.required_table()))}{_defined_in(chain, spec.name)}",
                "pass --force to replace it (uninstall puts the old one back), or pick another handler name; "
                "nodeagent does not adopt a handler without its keys (runsc would never read runsc.toml)",
            )
        else:
            _remove_everywhere(plan, files, chain, spec.name, existing)
            to_add.append(spec)
    return to_add


def dropped_handlers(handlers: list[model.HandlerSpec], owned: Mapping[str, str]) -> list[str]:
    """nodeagent's own handlers of a runtime this run installs that the run no longer asks for
    (a Kata shim taken out of kata_shims, a renamed handler). Runtimes not in this run keep theirs:
    `--runtime gvisor` leaves Kata's handlers alone."""
    runtimes = {spec.runtime for spec in handlers}
    wanted = {spec.name for spec in handlers}
    return sorted(name for name, runtime in owned.items() if runtime in runtimes and name not in wanted)


def _drop_unwanted_own(plan: Plan, files: _Files, state: state_mod.State) -> None:
    """Take the dropped handlers out of the files state.json says hold them, the way uninstall
    does (`_strip_ours`: only nodeagent's own tables go, whatever the operator added since)."""
    dropped = set(dropped_handlers(plan.handlers, state.handlers))
    for path, record in state.files.items():
        names = dropped & set(record.handlers)
        if names and files.current(path) is not None:
            _edit_text(files, path, record.role, lambda text, style, r=record, n=names: _strip_ours(text, style, r, n))
        for name in sorted(names & set(record.replaced)):
            plan.notes.append(f"the handler {name!r} nodeagent replaced with --force is in the backup {record.backup}")
    if dropped:
        plan.dropped = sorted(dropped)
        plan.notes.append(f"nodeagent's handler(s) {', '.join(plan.dropped)} are no longer asked for: removed")


def _dropin_dir_runtimes(host: HostRoot, dropin: str) -> dict[str, dict[str, Any]]:
    directory = dropin.rsplit("/", 1)[0]
    found: dict[str, dict[str, Any]] = {}
    for name in host.listdir(directory):
        if name.endswith(".toml"):
            item = load_chain(host, f"{directory}/{name}")[0]
            found.update(edit.runtimes_of(item.data, item.version))
    return found


def differing_keys(existing: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """What the existing handler lacks or sets otherwise (`options.TypeUrl missing`, `runtime_type is '…'`),
    naming the operator's values, not ours: that is what they have to look at."""
    out: list[str] = []
    for key, value in wanted.items():
        name = f"{prefix}{key}"
        if key not in existing and isinstance(value, dict):
            out += differing_keys({}, value, f"{name}.")
        elif key not in existing:
            out.append(f"{name} missing")
        elif isinstance(value, dict) and isinstance(existing[key], dict):
            out += differing_keys(existing[key], value, f"{name}.")
        elif existing[key] != value:
            out.append(f"{name} is {existing[key]!r}")
    return out


def _defined_in(chain: list[LoadedFile], name: str) -> str:
    paths = [item.path for item in chain if name in edit.runtimes_of(item.data, item.version)]
    return f" (in {', '.join(paths)})" if paths else ""


def _remove_everywhere(plan: Plan, files: _Files, chain: list[LoadedFile], name: str, old: dict[str, Any]) -> None:
    """--force: drop every definition of `name` so ours is the only one (recorded for uninstall)."""
    if plan.layout.kind == "template":
        raise ConfigError(
            f"handler {name!r} is generated by {plan.flavor} itself and cannot be replaced from a template",
            f"configure nodeagent with another handler name (gvisor_handler / kata_handler) for {plan.flavor}",
        )
    plan.replaced[name] = old
    _remove_ours(files, chain, name, plan.config_path)


def _remove_older_own(plan: Plan, files: _Files, chain: list[LoadedFile], name: str) -> None:
    """Take the table an older nodeagent wrote for `name` out of where it lives, before the new one
    goes in: our block in a k3s/rke2 template (recognised byte for byte), else every config file
    of the chain and our own target file (a k0s drop-in is merged by k0s, not imported)."""
    target = plan.layout
    if target.kind == "template":
        _edit_text(files, target.path, target.role, lambda text, style: edit.remove_our_blocks(text, name, style))
        return
    _remove_ours(files, chain, name, plan.config_path)
    raw = files.current(target.path)
    if raw is not None and name in edit.runtimes_of(edit.parse(edit.decode(raw, target.path)[0], target.path),
                                                    target.version):
        _edit_text(files, target.path, target.role,
                   lambda text, style: edit.remove_runtime(text, target.version, name, style, target.path))


def _remove_ours(files: _Files, chain: list[LoadedFile], name: str, config_path: str) -> None:
    """Drop every definition of handler `name` from the files of the chain."""
    for item in chain:
        if name in edit.runtimes_of(item.data, item.version):
            role = "config" if item.path == config_path else "dropin"
            _edit_text(files, item.path, role,
                       lambda text, style, it=item: edit.remove_runtime(text, it.version, name, style, it.path))


def _self_check(host: HostRoot, plan: Plan, major: int) -> None:
    """Re-read the planned files the way containerd will: every handler must come out as planned."""
    overrides = plan.validation_overrides or plan.overrides()
    chain = load_chain(host, plan.layout.validate_path or plan.config_path, overrides, missing_ok=major >= 2)
    check_schema(chain, major)
    result = effective_runtimes(chain, major)
    for spec in plan.handlers:
        if spec.name not in result or not compatible(result[spec.name], spec.required_table()):
            raise ConfigError(
                f"after the planned edit containerd would still not serve handler {spec.name!r}",
                "this layout is not supported yet; register the handler by hand and report it",
            )


# -- uninstall ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What carrying out a plan changes: the files (old/new bytes), whether containerd must restart."""

    files: list[FileChange]
    restart: bool
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(f.action != "none" for f in self.files)

    def to_json(self) -> dict:
        return {"changed": self.changed, "restart": self.restart,
                "files": [f.to_json() for f in self.files if f.action != "none"], "artifacts": []}


def _strip_ours(text: str, style: edit.TextStyle, record: state_mod.FileRecord, names: set[str]) -> str:
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
        owner = runtime_plugins.owner_of_role(record.role)  # a runtime's option file, e.g. gVisor's runsc.toml
        if owner is not None:
            if owner in remaining.values():
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
        new_text = _strip_ours(text, style, record, {h for h in record.handlers if h in removing})
        if not ours_left:
            if record.defaults_added:  # back to containerd's implicit default
                new_text = _strip_ours(new_text, style, record, set(record.defaults_added))
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
    restart = flavor != "k0s" and any(c.action != "none" and c.role not in runtime_plugins.option_roles() for c in changes)
    return Outcome(changes, restart, notes), new_state


def _only_skeleton(text: str) -> bool:
    body = [line.strip() for line in text.splitlines()]
    return all(not line or line.startswith("#") or line.startswith("version") or line == layout.BASE_LINE.strip()
               for line in body)
