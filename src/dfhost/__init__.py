"""dfhost: a self-hosted, Python-native runtime for Azure Durable Functions apps."""

__version__ = "0.1.0"
