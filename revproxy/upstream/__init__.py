"""
The upstream side: lean HTTP/1.1 connections to upstreams
(L{revproxy.upstream.connection}, with the request body sender in
L{revproxy.upstream.body}) and their pool (L{revproxy.upstream.pool}), the
runtime state of each live upstream (in flight, failures, passive
ejection, health) that balancers and health checks read
(L{revproxy.upstream.state}), and the active health checks
(L{revproxy.upstream.health}).
"""
