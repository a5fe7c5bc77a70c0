"""replicate: a reproducible benchmark and replication suite for "Deeply Shared Filter Bases" (Kang & Kim)."""
__version__ = "0.1.0"
