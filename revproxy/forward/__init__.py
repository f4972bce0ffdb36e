"""
Forwarding: the L{twisted.web.proxy}-derived resource that routes each
request (L{revproxy.forward.resource}), the exchange that carries one
request to an upstream and its response back, phase by phase
(L{revproxy.forward.exchange}), its retries on other upstreams, the retry
window and the 503 of a host with no usable upstream
(L{revproxy.forward.attempts}), the retry policy it consults
(L{revproxy.forward.retry}), the request key of the hash policy
(L{revproxy.forward.hashkey}), the options of health, retries and
balancing (L{revproxy.forward.options}), the tunnels that carry bytes
both ways after a 101 (L{revproxy.forward.tunnel}), and the small
interfaces it reports each request through (L{revproxy.forward.reporting}).
"""
