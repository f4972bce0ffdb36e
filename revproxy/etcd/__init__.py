"""
Everything that talks to etcd: the gateway client (the one adapter over
txaioetcd), the watch stream decoder, the in-memory store for tests, the
one follow loop (list, watch, back off, resync) shared by the proxy's route
sync and C{revproxyctl watch}, the route sync itself and the embedded etcd.

The client imports txaioetcd, which is slow to import: import
L{revproxy.etcd.client} lazily, never from the plugin file.  This package's
C{__init__} imports nothing.
"""
