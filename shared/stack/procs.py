"""Child processes: free ports, start-up waits, and parent-death signals so nothing is orphaned."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, even by SIGKILL (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    cwd: str | None = None,
    session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, killed when this process dies.

    ``session``: in a session of its own too (``setsid``; its process group is then still its
    own). Linux's autogroup scheduler shares the CPU between sessions first and between threads
    within one: a server started in the caller's session competes thread by thread with
    everything else the caller started, as no deployed service does.
    """
    logger.debug("spawn %s", " ".join(argv))
    return subprocess.Popen(
        list(argv),
        env=env,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        process_group=None if session else 0,
        start_new_session=session,
        preexec_fn=_die_with_parent if os.name == "posix" else None,  # noqa: PLW1509
    )


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Call ``check`` until it returns true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to ``proc``'s group, wait, then SIGKILL what is left. Returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("pid %s did not stop within %ss; killing it", proc.pid, timeout)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return proc.returncode
