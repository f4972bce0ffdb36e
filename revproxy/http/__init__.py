"""
The client-facing HTTP/1.1 server: the site, its channels and requests
(L{revproxy.http.server}), the rules for the headers a proxy forwards
(hop-by-hop fields, forwarding headers) and its short error responses.
"""
