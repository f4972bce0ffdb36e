"""
Tests for L{revproxy.ctl.documents}: route documents for import and export.
"""

from __future__ import annotations

import io
import json

from twisted.trial.unittest import SynchronousTestCase

from revproxy.ctl.args import UsageError
from revproxy.ctl.documents import loadDocument, parseRouteDocument, routeDocument
from revproxy.ctl.plans import (
    planImport,
)
from tests.ctl.samples import U1, U2, U3, state


class DocumentTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """A document maps hosts to addresses or {upstream, weight} objects."""
        text = json.dumps(
            {
                "Blog.example.com": ["127.0.0.1:4000", {"upstream": "127.0.0.1:4001", "weight": 3}],
                "*": [{"upstream": "https://backend:8443/base"}],
            }
        )
        routes = parseRouteDocument(text, "f.json")
        self.assertEqual(routes, {"blog.example.com": (U1, U2), "*": (U3,)})
        self.assertEqual([u.weight for u in routes["blog.example.com"]], [1, 3])

    def test_refused(self) -> None:
        """Each kind of bad document is refused with a one-line message naming the source."""
        cases = [
            ("{", "not valid JSON"),
            ("[]", "expected a JSON object"),
            ('{"bad host": ["h:1"]}', "invalid host"),
            ('{"h": "h:1"}', "expected a list"),
            ('{"h": []}', "no upstreams"),
            ('{"h": ["h"]}', "upstream #1: upstream 'h': no port"),
            ('{"h": [1]}', "expected an address"),
            ('{"h": [{"upstream": "h:1", "weight": 0}]}', "weight 0"),
            ('{"h": [{"upstream": "h:1", "weight": true}]}', "weight True"),
            ('{"h": [{"upstream": "h:1", "weight": 1.5}]}', "weight 1.5"),
            ('{"h": [{"upstream": 5}]}', '"upstream" must be'),
            ('{"h": [{"upstream": "h:1", "wieght": 2}]}', "unknown field 'wieght'"),
            ('{"h": ["h:1", "http://h:1/"]}', "listed twice"),
            ('{"h": ["h:1"], "H.": ["h:2"]}', "appears twice"),
            ('{"h": ["h:1"], "h": ["h:2"]}', "appears twice"),
        ]
        for text, word in cases:
            e = self.assertRaises(UsageError, parseRouteDocument, text, "f.json")
            self.assertIn(word, str(e), text)
            self.assertTrue(str(e).startswith("f.json: "), str(e))
            self.assertNotIn("\n", str(e))

    def test_countsProblems(self) -> None:
        """Every host is checked; the message gives the first problem and how many more."""
        e = self.assertRaises(
            UsageError, parseRouteDocument, '{"a b": ["h:1"], "h": ["x"], "ok": ["h:1"]}', "f"
        )
        self.assertIn("invalid host 'a b'", str(e))
        self.assertIn("and 1 more problems", str(e))
        self.assertIn("nothing was written", str(e))

    def test_loadDocument(self) -> None:
        """- reads standard input; an unreadable file is a UsageError naming it."""
        routes = loadDocument("-", io.StringIO('{"h": ["127.0.0.1:4000"]}'))
        self.assertEqual(routes, {"h": (U1,)})
        e = self.assertRaises(UsageError, loadDocument, "/nonexistent/f.json", io.StringIO())
        self.assertIn("/nonexistent/f.json", str(e))

    def test_exportRoundTrip(self) -> None:
        """The exported document parses back to the same upstreams and weights."""
        s = state(
            ("/hosts/b.com/127.0.0.1:4000", b""),
            ("/hosts/b.com/127.0.0.1:4001", b'{"weight": 3}'),
            ("/hosts/a.com/https://backend:8443/base", b""),
        )
        document, warnings = routeDocument(s)
        self.assertEqual(warnings, [])
        self.assertEqual(
            document,
            {
                "a.com": ["https://backend:8443/base"],
                "b.com": ["127.0.0.1:4000", {"upstream": "127.0.0.1:4001", "weight": 3}],
            },
        )
        routes = parseRouteDocument(json.dumps(document), "-")
        self.assertEqual(planImport(s, "/hosts/", routes, replace=True).changes, ())

    def test_exportDuplicates(self) -> None:
        """Two keys naming one upstream of a host are exported once, with a warning."""
        s = state(("/hosts/h/127.0.0.1:4000", b""), ("/hosts/h/http://127.0.0.1:4000", b""))
        document, warnings = routeDocument(s)
        self.assertEqual(document, {"h": ["127.0.0.1:4000"]})
        self.assertEqual(len(warnings), 1)
