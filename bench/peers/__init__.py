"""The peers benchmark: our worker beside the job queues a user would pick instead.

Each peer runs with its own CLI and its documented defaults (only the concurrency is set), one
worker process, against one private redis-server; its Python packages live in a throw-away venv
under ``.cache/bench-peers/`` installed from the pinned, hashed files in ``requirements/``, and the
node peers come from ``bench/node``'s lock. ``runner`` measures one (peer, regime) run, ``suite``
interleaves the rounds and ``table`` prints the result. The modules in ``queues/`` are what each
peer's own worker imports: they run in that peer's venv, never in the harness.
"""
