"""
Forwarding: the L{twisted.web.proxy}-derived resource that routes each
request (L{revproxy.forward.resource}), the exchange that carries one
request to an upstream and its response back, phase by phase
(L{revproxy.forward.exchange}), the retry policy it consults
(L{revproxy.forward.retry}), and the small interfaces it reports each
request through (L{revproxy.forward.reporting}).
"""
