"""
What operators see and use: the drain on shutdown, the access log, JSON
logs, the request counters behind C{/metrics}, the admin site and the
upstreams' health in it (L{revproxy.ops.upstreams}).  These modules read
the rest of revproxy; nothing below them imports them.
"""
