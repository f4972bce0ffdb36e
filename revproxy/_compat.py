# -*- test-case-name: tests.test_compat -*-
"""
Every use of a private name of Twisted, treq or txaioetcd, in one place.

A private name can change in any release of the library that owns it.
Each one used here is used for a reason given beside it, where no public
API does the job, and each is pinned by a test in C{tests.test_compat}
that fails when the library changes it, so that an upgrade breaks one
named test instead of the proxy.  Nothing else in revproxy imports or
touches a private name of another project: C{tests.test_layout} checks.
"""

from __future__ import annotations

__all__: list[str] = []


# --------------------------------------------------------------------------
# Twisted
#
# (Each helper below says which private name it touches and why.)


# --------------------------------------------------------------------------
# txaioetcd and treq
#
# txaioetcd 18.10.2 is the etcd library the project is built on.  Its
# request types and response parsers are sound, its client and watch are not
# (see revproxy.etcd.client); the private names it keeps its request
# assemblers and parsers under are reached through the helpers below.
