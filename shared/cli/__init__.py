"""The ``redis-archive`` command: one click group (:mod:`shared.cli.main`) and its subcommand groups."""
