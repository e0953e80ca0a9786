"""The Durable Task gRPC protocol (`TaskHubSidecarService`) over dfhost's task hub, for the
Durable Task SDKs' workers and clients (needs the `grpc` extra: the `durabletask` package's
generated modules). `convert` maps proto history to dfhost's, `episodes` work items and
actions, `workers` the connected workers, `service` the RPCs, `server` the listener."""
