"""Local processes: the ``redis-archive up`` stack, the Sentinel topology, process helpers."""
