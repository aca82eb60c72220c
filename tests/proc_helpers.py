"""The live process table from /proc, for tests that check a sandbox or a run leaves no process behind."""

from __future__ import annotations

import os
from pathlib import Path


def process_table() -> dict[int, list[str]]:
    """pid -> the fields of /proc/PID/stat after "pid (comm)": state, ppid, pgrp, ..."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # the process ended while we looked
            table[int(entry)] = stat.rsplit(")", 1)[1].split()
    return table
