"""
The upstream side: lean HTTP/1.1 connections to upstreams and their pools
(L{revproxy.upstream.connection}, L{revproxy.upstream.pool}), and the
runtime state of each live upstream (in flight, failures, ejection, health)
that balancers and health checks read (L{revproxy.upstream.state}).
"""
