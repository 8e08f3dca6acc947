"""Run a command and record the peak resident memory of its process: `python peak_rss.py OUT CMD...`.

getrusage's ru_maxrss alone misses short spikes: the kernel updates a process's high-water mark
lazily, so a large buffer freed before exit may never show (a bzip2 bomb expanded to 600 MiB
read as 218 MiB). So /proc/<pid>/status (VmRSS, VmHWM) is polled every few milliseconds as well,
and the largest of all readings is written to OUT in bytes. The exit code is the command's.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time


def _status_peak(pid: int) -> int:
    peak = 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    peak = max(peak, int(line.split()[1]) << 10)
    except (OSError, ValueError, IndexError):
        pass
    return peak


def main(argv: list[str]) -> int:
    out, cmd = argv[0], argv[1:]
    proc = subprocess.Popen(cmd)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _status_peak(proc.pid))
        time.sleep(0.002)
    peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss << 10)
    with open(out, "w") as fh:
        fh.write(str(peak))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
