"""Bull v4 and Express 4 (from npm, installed into a temporary directory, never into the repository)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "node" / "bull-bench.js"
#: ``node express-bull.js PORT REDIS_URL``: the Express + Bull producer of the HTTP benchmark.
EXPRESS = Path(__file__).resolve().parent / "node" / "express-bull.js"


@contextmanager
def bull() -> Iterator[Path | None]:
    """A temporary ``node_modules`` with bull@4 and express@4; ``None`` without node/npm or when npm fails."""
    if not (shutil.which("node") and shutil.which("npm")):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bull-") as tmp:
        result = subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", tmp, "bull@4", "express@4"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            print(f"(npm install bull@4 failed, no Bull figures: {result.stderr.strip()[:200]})")
            yield None
        else:
            yield Path(tmp) / "node_modules"


def node_env(modules: Path) -> dict[str, str]:
    """The environment node runs in: the temporary modules, the caller's PATH."""
    return {"NODE_PATH": str(modules), "PATH": __import__("os").environ["PATH"]}


def run(modules: Path, mode: str, redis_url: str, n: int, concurrency: int = 1) -> float:
    """Run one Bull measurement; returns its rate (per second)."""
    result = subprocess.run(
        ["node", str(SCRIPT), mode, redis_url, str(n), str(concurrency)],
        capture_output=True,
        text=True,
        timeout=600,
        env=node_env(modules),
    )
    if result.returncode != 0:
        raise RuntimeError(f"bull {mode} failed: {result.stderr[-500:]}")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["rate"])
