"""A process any local user can start that calls itself containerd (issue 11 §1, review C1).

It is a real compiled executable named `containerd`, so the kernel shows it as one (comm, exe).
Started with `--address SOCK` it behaves like a daemon: it listens on SOCK and waits. Run any
other way — `--version`, `--config X config dump`, which is what nodeagent would do with a
binary it trusted — it appends `uid=.. euid=.. argv0=..` to every marker path it was built
with (those whose directory exists where it runs) and prints a containerd-like version line.
A marker file therefore proves that nodeagent executed a binary it should not have.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

_SOURCE = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

static const char *markers[] = { MARKERS };

int main(int argc, char **argv) {
    const char *address = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--address")) address = argv[i + 1];
    if (address) {  /* the attacker's "daemon": serve a socket of its own */
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strncpy(sa.sun_path, address, sizeof sa.sun_path - 1);
        unlink(address);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 16)) return 1;
        for (;;) pause();
    }
    for (unsigned m = 0; m < sizeof markers / sizeof *markers; m++) {  /* someone ran us: say who */
        FILE *f = fopen(markers[m], "a");
        if (!f) continue;
        fprintf(f, "uid=%d euid=%d", (int)getuid(), (int)geteuid());
        for (int i = 0; i < argc; i++) fprintf(f, " argv%d=%s", i, argv[i]);
        fputc('\n', f);
        fclose(f);
    }
    puts("containerd github.com/containerd/containerd v9.9.9 not-containerd");
    return 0;
}
"""

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def world_writable_dir(parent: str | os.PathLike = "/tmp") -> Path:
    """A fresh directory that `nobody` owns and anyone may write (where an attacker would work)."""
    path = Path(tempfile.mkdtemp(prefix="nodeagent-attack-", dir=parent))
    os.chmod(path, 0o777)
    os.chown(path, 65534, 65534)
    return path


def build(dest: Path, markers: list[str]) -> Path:
    """Compile the fake containerd to dest/containerd (owned by nobody, like an attacker's copy)."""
    if shutil.which("cc") is None:
        raise RuntimeError("no C compiler: scripts/setup-test-env installs gcc")
    source = dest / "fake-containerd.c"
    source.write_text(_SOURCE.replace("MARKERS", ", ".join(json.dumps(m) for m in markers)))
    binary = dest / "containerd"
    subprocess.run(["cc", "-O1", "-o", str(binary), str(source)], check=True, capture_output=True, text=True)
    source.unlink()
    os.chmod(binary, 0o755)
    os.chown(binary, 65534, 65534)
    return binary
