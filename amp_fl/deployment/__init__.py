"""Running AMP-FL on Flower's deployment engine: credentials, device profiles, channels, processes.

- :mod:`.credentials`: TLS certificates (a private CA, the SuperLink's and every SuperNode's
  server certificate) and SuperNode authentication keys, for loopback tests and Docker alike.
- :mod:`.profiles`: a node's profile reply from its node config (reported, measured, or simulated).
- :mod:`.provenance`: where each device's profile and channel came from, kept for ``summary.json``.
- :mod:`.benchmark`: a SuperNode's measured training throughput on the run's actual model.
- :mod:`.channel`: the uplink channel of a deployment (reported rates, simulated fallback).
- :mod:`.topology`: the command lines of a SuperLink / SuperExec / SuperNode federation, and
  a process supervisor that starts one on loopback and leaves nothing behind.
- :mod:`.register`: registering SuperNode public keys (``flwr supernode register``).
- :mod:`.ray_cluster`: attaching the simulation to an existing Ray cluster, or starting one.
"""
