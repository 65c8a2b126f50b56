"""Which machine and PID namespace this process runs in: only processes that share both can judge each other's pids."""

from __future__ import annotations

import os
import socket
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def host_identity() -> str:
    """This kernel (its boot) and PID namespace: cloned machines share a hostname, and every Linux's first PID
    namespace has the same inode, so the hostname alone cannot tell them apart."""
    try:
        boot = BOOT_ID.read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()  # not Linux: one PID space per host
    return f"{socket.gethostname()}#{boot}#{namespace}"


def same_host(recorded: str) -> bool:
    """True when a recorded identity is this process's host (a bare hostname is what older releases recorded)."""
    return recorded == host_identity() or ("#" not in recorded and recorded == socket.gethostname())


def pid_alive(pid: int) -> bool:
    """True while a process of this PID namespace has the id (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
