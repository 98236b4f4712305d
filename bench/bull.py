"""Bull v4 and Express 4 from npm, installed by ``npm ci`` into bench/node from its committed lock."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.peers import envs

SCRIPT = Path(__file__).resolve().parent / "node" / "bull-bench.js"
#: ``node express-bull.js PORT REDIS_URL``: the Express + Bull producer of the HTTP benchmark.
EXPRESS = Path(__file__).resolve().parent / "node" / "express-bull.js"


@contextmanager
def bull() -> Iterator[Path | None]:
    """bench/node's ``node_modules`` (bull, express, ...); ``None`` without node/npm or when npm fails."""
    if not envs.node_available():
        yield None
        return
    try:
        envs.ensure_node()
    except (envs.EnvError, subprocess.SubprocessError) as exc:
        print(f"(npm ci in bench/node failed, no Bull figures: {str(exc)[:200]})")
        yield None
        return
    yield envs.NODE_DIR / "node_modules"


def node_env(modules: Path) -> dict[str, str]:
    """The environment node runs in: the modules, the caller's PATH."""
    return {"NODE_PATH": str(modules), "PATH": os.environ["PATH"]}


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
