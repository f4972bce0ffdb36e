"""
The C{twistd revproxy} plugin.  It stays one declaration: twistd imports
every plugin to list its subcommands, so nothing heavy is imported here.
"""

from twisted.application.service import ServiceMaker

revproxy = ServiceMaker(
    "revproxy",
    "revproxy.tap",
    "A reverse proxy and HTTP load balancer with live routes from etcd.",
    "revproxy",
)
