"""The project's key names: one prefix, and a namespace's keys in its hash tag's slot."""

from __future__ import annotations

import ast
from pathlib import Path

from redis.crc import key_slot

from shared import keys as keys_module
from shared.keys import KEYS, PREFIX, Keys, own_prefix_for
from shared.rqmodel.keys import RQKeys

ROOT = Path(__file__).resolve().parents[2]


def test_every_key_of_the_process_is_under_the_prefix() -> None:
    own = [getattr(KEYS, name) for name, value in vars(Keys).items() if isinstance(value, property)]
    own += [KEYS.recovering("w1"), KEYS.finished_minute(1)]
    assert KEYS.heartbeats in own and KEYS.lock_stats in own
    assert all(key.startswith(PREFIX) for key in own), own
    prefixes = [value for name, value in vars(keys_module).items() if name.endswith("_PREFIX")]
    assert len(prefixes) == 5 and all(prefix.startswith(PREFIX) for prefix in prefixes)


def test_a_namespace_keeps_the_projects_keys_in_its_slot() -> None:
    keys = Keys("{member-2}")
    assert keys.own_prefix == own_prefix_for("{member-2}") == "{member-2}:" + PREFIX
    assert keys.heartbeats == "{member-2}:archive:heartbeat:workers"
    assert keys.job("a") == RQKeys("{member-2}").job("a")
    together = (keys.job("a"), keys.queue("member"), keys.heartbeats, keys.job_stats, keys.lock_stats)
    slots = {key_slot(key.encode()) for key in together}
    assert len(slots) == 1
    assert Keys("app:v2").own_prefix == PREFIX


def test_the_seam_names_no_key_of_the_project() -> None:
    seam = ROOT / "shared" / "rqmodel"
    for path in seam.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "shared.keys" not in imported, path
        assert PREFIX not in path.read_text(encoding="utf-8"), path
