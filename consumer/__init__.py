"""Job functions and the worker entry. Never imports Flask or the producer."""
