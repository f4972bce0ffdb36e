"""
revproxy: a reverse proxy and HTTP load balancer on Twisted, with routes in
etcd.
"""

__version__ = "0.1.0"
