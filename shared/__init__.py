"""Settings, Redis connections, the distributed lock and memory probes shared by producer and consumer."""

__version__ = "0.1.0"
