"""Where each peer's code comes from: throw-away venvs from pinned files, and bench/node's npm lock.

A Python peer gets a venv under ``.cache/bench-peers/<name>`` (git-ignored), installed with
``pip --require-hashes --no-deps`` from ``bench/peers/requirements/<name>.txt``, which pins every
package with its hashes (``make bench-lock`` compiles it from ``<name>.in``). The venv is rebuilt
when that file changes. The node peers (Bull, BullMQ) come from ``npm ci`` in ``bench/node``, from
its committed ``package-lock.json``. Our worker and stock RQ run in the project's own venv.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).resolve().parent / "requirements"
CACHE = ROOT / ".cache" / "bench-peers"
NODE_DIR = ROOT / "bench" / "node"
MARKER = ".bench-installed"


class EnvError(RuntimeError):
    """A peer's environment could not be installed."""


@dataclass(frozen=True)
class PythonEnv:
    """A Python environment: the project's own (``name`` "main") or a peer's venv."""

    name: str

    @property
    def path(self) -> Path:
        return Path(sys.prefix) if self.name == "main" else CACHE / self.name

    @property
    def python(self) -> str:
        return sys.executable if self.name == "main" else str(self.path / "bin" / "python")

    def script(self, command: str) -> str:
        """The path of a console script installed in this environment."""
        return str(Path(self.python).parent / command)

    @property
    def requirements(self) -> Path:
        return REQUIREMENTS / f"{self.name}.txt"

    def pins(self) -> dict[str, str]:
        """``package -> version`` as pinned in the requirements file."""
        if self.name == "main":
            return {}
        pinned = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", self.requirements.read_text(), re.M)
        return {name.lower(): version for name, version in pinned}

    def ensure(self) -> bool:
        """Create or refresh the venv from its requirements; returns whether it installed anything."""
        if self.name == "main":
            return False
        digest = hashlib.sha256(self.requirements.read_bytes()).hexdigest()
        marker = self.path / MARKER
        if marker.exists() and marker.read_text() == digest:
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", str(self.path)], f"venv for {self.name}")
        pip = [self.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*pip, "--require-hashes", "--no-deps", "-r", str(self.requirements)], f"pip for {self.name}")
        marker.write_text(digest)
        return True


def node_available() -> bool:
    """Whether node and npm are on PATH."""
    return bool(shutil.which("node") and shutil.which("npm"))


def ensure_node() -> bool:
    """``npm ci`` in bench/node when its lock changed; returns whether it installed anything."""
    if not node_available():
        raise EnvError("node and npm are not on PATH")
    lock = NODE_DIR / "package-lock.json"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    marker = NODE_DIR / "node_modules" / MARKER
    if marker.exists() and marker.read_text() == digest:
        return False
    _run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], "npm ci in bench/node", cwd=NODE_DIR)
    marker.write_text(digest)
    return True


def node_version(package: str) -> str:
    """The version of ``package`` that bench/node's lock pins."""
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    return str(lock["packages"][f"node_modules/{package}"]["version"])


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=cwd)
    if result.returncode != 0:
        raise EnvError(f"{what} failed: {(result.stderr or result.stdout).strip()[-800:]}")
