"""The link between the HTTP front process and the engine process.

`double11 serve` runs two processes: the front speaks HTTP (granian) and the
engine holds the festival.  Each has its own interpreter lock, so the engine's
Python (group commit, answers) never stalls the front's request handling, and
the front's never delays a batch.  They talk over one Unix socket pair in the
frames of `frames`: `remote.RemoteFestival` is the front's end, `engine` the
engine process, and `local.LocalFestival` the same operations in-process (the
engine serves through it; tests and embedders use it directly).
"""
