"""Memory probes: what a key costs, byte by byte, and how many more keys fit before OOM.

:mod:`~shared.memory.model` (allocator classes, Redis's per-key costs),
:mod:`~shared.memory.replay` (a fill replayed on Redis's dict), :mod:`~shared.memory.valkey`
(Valkey 8.1+'s objects) and :mod:`~shared.memory.valkey_table` (its hash table and fill replay),
:mod:`~shared.memory.snapshot` (a server's state), :mod:`~shared.memory.predict` (the prediction
and its ``[low, high]``), :mod:`~shared.memory.keys` (``probe key``), :mod:`~shared.memory.fill`
(fills, sweeps, watch), :mod:`~shared.memory.charts`.
"""
