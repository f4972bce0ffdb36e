"""
Tests for L{revproxy.routing.documents}: the one route document parser, and
where it places a problem.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import parseUpstream
from revproxy.routing.documents import DocumentError, lineOf, parseRouteDocument


class ParseTests(SynchronousTestCase):
    def test_parses(self) -> None:
        """A document maps hosts to upstreams, weights included."""
        routes = parseRouteDocument(
            '{"a": ["127.0.0.1:1", {"upstream": "127.0.0.1:2", "weight": 3}]}', "f"
        )
        self.assertEqual(routes, {"a": (parseUpstream("127.0.0.1:1"), parseUpstream("127.0.0.1:2"))})
        self.assertEqual(routes["a"][1].weight, 3)

    def test_jsonErrorLine(self) -> None:
        """A JSON syntax error is a DocumentError with its line."""
        e = self.assertRaises(DocumentError, parseRouteDocument, '{\n"a": [\n}', "f")
        self.assertEqual(e.line, 3)
        self.assertTrue(str(e).startswith("f: not valid JSON"))

    def test_hostProblemLine(self) -> None:
        """A bad upstream names its host and the host's line."""
        text = '{\n  "a": ["127.0.0.1:1"],\n  "b": ["127.0.0.1"]\n}'
        e = self.assertRaises(DocumentError, parseRouteDocument, text, "f")
        self.assertEqual((e.host, e.line), ("b", 3))
        self.assertIn("host 'b'", str(e))

    def test_duplicateKey(self) -> None:
        """A key given twice is an error."""
        self.assertRaises(DocumentError, parseRouteDocument, '{"a": [], "a": []}', "f")

    def test_lineOf(self) -> None:
        """lineOf finds a host's JSON string."""
        self.assertEqual(lineOf('{\n\n"x": 1}', "x"), 3)
        self.assertIsNone(lineOf("{}", "x"))
