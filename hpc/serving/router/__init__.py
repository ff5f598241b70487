"""The router in front of a repository's Triton replicas: one stable endpoint for HTTP (KServe v2) and gRPC.

A Python data plane (asyncio; aiohttp and grpcio's generic handlers pass bodies through as bytes) that
runs wherever hpc-tf does (RHEL/Rocky 8 included). Modules, one concern each:

- :mod:`.core` the state (pool, splits, metrics, secret) and the one forwarding path of both fronts
- :mod:`.pool` the replicas and least-outstanding-requests choice; :mod:`.split` weighted/sticky variants
- :mod:`.http_front`, :mod:`.grpc_front` the two protocol fronts; :mod:`.wire` the gRPC model-name rewrite
- :mod:`.metrics` Prometheus text; :mod:`.client` the owner's control calls; :mod:`.run` the process

Control calls (splits, replicas, state) answer only the owner's key of the repository
(:mod:`hpc.serving.secret`, the same one that locks the serving node); inference is open unless the
owner set an inference token, exactly like the node.
"""
