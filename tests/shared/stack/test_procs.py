"""``procs.spawn``: each child in a process group of its own, and in a session of its own when asked."""

from __future__ import annotations

import os

import pytest

from shared.stack import procs


@pytest.mark.parametrize("session", [False, True])
def test_a_spawned_child_leads_its_own_group_and_stops_with_it(session: bool) -> None:
    proc = procs.spawn(["sleep", "30"], session=session)
    try:
        assert os.getpgid(proc.pid) == proc.pid
        if session:
            assert os.getsid(proc.pid) == proc.pid
        else:
            assert os.getsid(proc.pid) == os.getsid(0)
    finally:
        code = procs.stop(proc, timeout=5)
    assert code == -15  # SIGTERM to the group ended it, with no SIGKILL needed
    assert proc.poll() is not None
