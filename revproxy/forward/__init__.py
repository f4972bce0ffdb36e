"""
Forwarding: the L{twisted.web.proxy}-derived resource that routes each
request (L{revproxy.forward.resource}) and the exchange that carries one
request to an upstream and its response back, phase by phase
(L{revproxy.forward.exchange}).
"""
