"""The worker's code stays readable: short modules, no mixins, no silenced type errors."""

from __future__ import annotations

import re

from tests.servers import ROOT


def test_consumer_modules_are_short_and_plain() -> None:
    for path in sorted((ROOT / "consumer").rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(ROOT)
        assert len(text.splitlines()) <= 400, f"{name} is over 400 lines"
        assert "type: ignore" not in text, f"{name} silences a type error"
        assert not re.search(r"^class \w*Mixin\b", text, re.MULTILINE), f"{name} defines a mixin"
