"""The Azure Storage task hub (or Azurite): tables, queues and blobs, committed in steps as DTFx
does, with dedupe rules for what a crash between steps sends again."""

from dfhost.store.azure.store import AzureStore

__all__ = ["AzureStore"]
