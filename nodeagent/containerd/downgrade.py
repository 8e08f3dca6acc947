"""containerd 2.x -> 1.x under us: retire the drop-in nodeagent wrote for 2.x.

On 2.x nodeagent registers its handlers in a drop-in (`conf.d/90-nodeagent.toml`) that tables
deep-merge into. containerd 1.x instead lets any imported file with a CRI table replace the
whole CRI section (containerd#5837): after a downgrade our drop-in would silently drop runc,
the sandbox image and every other CRI setting of the main file. So before planning for 1.x,
the drop-ins state.json says we created are deleted (with the `imports` entries we added for
them), and the handlers go in place like any 1.x install. A version 3 main file is refused
earlier (plan.check_schema): 1.x cannot read it at all, whatever we do.
"""

from __future__ import annotations

from nodeagent import state as state_mod
from nodeagent.containerd import edit
from nodeagent.containerd.imports import LoadedFile
from nodeagent.containerd.inspect import cri_table_v1x


def retire_2x_dropins(host, chain: list[LoadedFile], files) -> list[tuple[str, str]]:
    """Plan the removal of our own CRI drop-ins from `chain`; returns (importer, entry) pairs removed."""
    state = state_mod.load(host)
    removed: list[tuple[str, str]] = []
    for item in chain[1:]:
        record = state.files.get(item.path)
        if record is None or not record.created or record.role != "dropin" or cri_table_v1x(item) is None:
            continue
        files.set(item.path, None, "dropin")
        for importer, importer_record in state.files.items():
            if item.path not in importer_record.imports_added:
                continue
            text, style = edit.decode(files.current(importer) or b"", importer)
            new = edit.remove_import(text, item.path, importer, drop_empty_line=importer_record.imports_line_created)
            files.set(importer, edit.encode(new, style), "config")
            removed.append((importer, item.path))
    return removed
