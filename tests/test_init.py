"""
Tests for L{revproxy}'s library API: what C{revproxy} exports.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import revproxy


class ExportsTests(SynchronousTestCase):
    """
    C{revproxy} exports what a library user needs, and nothing private.
    """

    def test_exportsImport(self) -> None:
        """
        Every name in C{__all__} imports, from revproxy's own modules.
        """
        for name in revproxy.__all__:
            value = getattr(revproxy, name)
            self.assertTrue(
                value.__module__.startswith("revproxy."), f"{name} from {value.__module__}"
            )
            self.assertEqual(value.__name__, name)

    def test_nothingPrivate(self) -> None:
        """
        No exported name is private, and C{from revproxy import *} gives
        exactly the exports.
        """
        self.assertEqual([n for n in revproxy.__all__ if n.startswith("_")], [])
        namespace: dict[str, object] = {}
        exec("from revproxy import *", namespace)
        self.assertEqual(
            sorted(n for n in namespace if n != "__builtins__"), sorted(revproxy.__all__)
        )

    def test_whatALibraryUserNeeds(self) -> None:
        """
        The resource, the resolver, the route sources and the service tree
        are exported.
        """
        for name in (
            "RoutingProxyResource",
            "ProxySite",
            "RouteResolver",
            "RouteTable",
            "HostConverterTable",
            "etcdRouteService",
            "EtcdRouteSync",
            "UpstreamPool",
            "makeService",
        ):
            self.assertIn(name, revproxy.__all__)

    def test_unknownName(self) -> None:
        """
        An unknown name is an L{AttributeError}, as for any module.
        """
        self.assertRaises(AttributeError, getattr, revproxy, "_private")

    def test_importIsCheap(self) -> None:
        """
        Importing revproxy and its pure core imports neither the reactor,
        nor twisted.web, nor txaioetcd.
        """
        code = (
            "import sys, revproxy, revproxy.routing\n"
            "print(sorted(m for m in ('twisted.internet.reactor', 'twisted.web', "
            "'txaioetcd') if m in sys.modules))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(out.strip(), "[]")

    def test_allIsEveryExport(self) -> None:
        """
        C{__all__}, written out for readers and linters, lists exactly the
        lazily imported names.
        """
        self.assertEqual(revproxy.__all__, sorted(revproxy._EXPORTS))
