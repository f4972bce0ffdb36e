"""
Tests for L{revproxy._compat}: each private name of Twisted, treq or
txaioetcd that revproxy uses is still there and still behaves as relied on.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase


class TwistedPrivatesTests(SynchronousTestCase):
    """
    The private names of Twisted that revproxy relies on.
    """


class EtcdLibraryPrivatesTests(SynchronousTestCase):
    """
    The private names of txaioetcd and treq that revproxy relies on.
    """
