"""Processes and listening sockets of a process tree, read from Linux's ``/proc`` (no psutil).

``start_ray`` uses it to remember the local Ray session's processes for the reaper
(``python -m raytrade.proctree --reap``): when the driver dies — even by SIGKILL, which runs no
clean-up — the reaper ends what Ray leaves behind (its dashboard and runtime-env agents outlive a
killed driver by about a minute). The tests use it to list the sockets a session listens on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable

Identity = tuple[int, int]  # (pid, start time in clock ticks since boot): a pid is reused, this is not


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def process_tree(*roots: int) -> set[int]:
    """``roots`` and every live descendant of them."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None and st[0] != "Z":
            parent[int(name)] = st[1]
    tree, frontier = set(roots), list(roots)
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return {p for p in tree if p in parent}


def identities(pids: Iterable[int]) -> set[Identity]:
    """The (pid, start time) of each live pid."""
    return {(p, st[2]) for p in pids if (st := _stat(p)) is not None and st[0] != "Z"}


def alive(ids: Iterable[Identity]) -> set[Identity]:
    """Those of ``ids`` still running as the same process (not a zombie, not a reused pid)."""
    return {(p, t) for p, t in ids if (st := _stat(p)) is not None and st[0] != "Z" and st[2] == t}


def command_name(pid: int) -> str:
    """The first word of ``pid``'s command line (Ray's workers rename themselves ``ray::…``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"


def _socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _address(hex_ip: str, family: int) -> str:
    raw = bytes.fromhex(hex_ip)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[::-1])
    return socket.inet_ntop(family, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def listening_sockets(pids: Iterable[int]) -> list[tuple[str, int, int]]:
    """Every listening TCP socket (IPv4 and IPv6) held by ``pids``: (address, port, pid)."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    out = []
    for family, path in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] != "0A" or int(parts[9]) not in owner:  # 0A: LISTEN
                continue
            hex_ip, hex_port = parts[1].split(":")
            out.append((_address(hex_ip, family), int(hex_port, 16), owner[int(parts[9])]))
    return sorted(out)


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x.y.z)."""
    return address == "::1" or address.removeprefix("::ffff:").startswith("127.")


def reap(ids: Iterable[Identity], grace_s: float = 3.0) -> set[Identity]:
    """SIGTERM the processes of ``ids`` still running, SIGKILL those left after ``grace_s``; return
    the ones that could not be ended."""
    left = alive(ids)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        for pid, _ in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while (left := alive(left)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not left:
            break
    return left


def _watch(driver: Identity, roots: set[Identity], poll_s: float = 0.5, rescan_s: float = 5.0) -> None:
    """Follow the trees of ``roots`` (the processes ``ray.init`` started) while the driver lives, then
    reap what is left of them."""
    known = set(roots)
    last_scan = -rescan_s
    while alive([driver]):
        if time.monotonic() - last_scan >= rescan_s:  # Ray starts workers as it goes
            known |= identities(process_tree(*(pid for pid, _ in alive(roots))))
            last_scan = time.monotonic()
        time.sleep(poll_s)
    reap(known)


def start_reaper(roots: Iterable[int]) -> None:
    """Start the reaper of ``roots`` (and their descendants) for this process: a detached
    ``python -m raytrade.proctree`` that outlives us and ends them once we are gone."""
    import subprocess

    me = next(iter(identities([os.getpid()])))
    ids = identities(roots)
    if not ids:
        return
    subprocess.Popen(
        [sys.executable, "-m", "raytrade.proctree", "--reap", f"{me[0]}:{me[1]}",
         ",".join(f"{p}:{t}" for p, t in sorted(ids))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )  # fmt: skip


def _identity(text: str) -> Identity:
    pid, start = text.split(":")
    return int(pid), int(start)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--reap":
    _watch(_identity(sys.argv[2]), {_identity(x) for x in sys.argv[3].split(",")})
