"""Memory probes: what a key costs, byte by byte, and how many more keys fit before OOM.

:mod:`~shared.memory.model` (allocator classes, per-key costs, the fill replay),
:mod:`~shared.memory.snapshot` (a server's state and the prediction), :mod:`~shared.memory.keys`
(``probe key``), :mod:`~shared.memory.fill` (fills, sweeps, watch), :mod:`~shared.memory.charts`.
"""
