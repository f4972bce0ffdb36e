"""
Tests of request identity and trusted forwarding headers through the
routing proxy resource on a real L{twisted.web.server.Site}, on in-memory
transports (L{tests.forward.test_resource.ProxyHarness}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.config import parseNetworks
from revproxy.http.forwarding import ForwardingPolicy
from tests.forward.test_resource import OK, ProxyHarness, _get, _headers


def _ids() -> ForwardingPolicy:
    counter = iter(range(1, 1000))
    return ForwardingPolicy(newRequestId=lambda: b"rid%013d" % next(counter))


class RequestIdTests(SynchronousTestCase):
    def test_sentUpstreamAndReturned(self) -> None:
        """
        A request gets a new id, sent upstream as X-Request-Id and returned
        to the client; an upstream's own X-Request-Id does not reach the
        client; the access log gets the request, which carries the id.
        """
        h = ProxyHarness(forwarding=_ids())
        _, client = h.client(_get(extra=b"X-Request-Id: spoofed\r\n"))
        proto, upstream = h.upstream()
        _, headers, _ = _headers(upstream.value())
        self.assertEqual([v for n, v in headers if n == b"x-request-id"], [b"rid0000000000001"])
        proto.dataReceived(OK.replace(b"\r\n\r\n", b"\r\nX-Request-Id: other\r\n\r\n"))
        _, back, body = _headers(client.value())
        self.assertEqual(body, b"hello")
        self.assertEqual([v for n, v in back if n == b"x-request-id"], [b"rid0000000000001"])
        [(request, *_)] = h.logged
        self.assertEqual(request.requestId, b"rid0000000000001")  # type: ignore[attr-defined]

    def test_onErrors(self) -> None:
        """
        The proxy's own error responses carry the request's id: a 404 for
        a host without a route, a 503 when no upstream can be reached.
        """
        h = ProxyHarness(forwarding=_ids())
        _, client = h.client(_get(host=b"nowhere.example"))
        status, back, _ = _headers(client.value())
        self.assertIn(b"404", status)
        self.assertIn((b"x-request-id", b"rid0000000000001"), back)
        _, client = h.client(_get())
        h.endpoint().fail()
        status, back, _ = _headers(client.value())
        self.assertTrue(status.split()[1].startswith(b"5"), status)
        self.assertIn((b"x-request-id", b"rid0000000000002"), back)

    def test_trustedPeer(self) -> None:
        """
        From a trusted proxy (the harness's client is 192.0.2.7) the
        forwarding headers and a valid X-Request-Id are kept, the peer
        appended to X-Forwarded-For.
        """
        networks, _ = parseNetworks("192.0.2.0/24")
        h = ProxyHarness(forwarding=ForwardingPolicy(trusted=networks, forwarded=True))
        _, client = h.client(
            _get(extra=b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
                 b"X-Request-Id: upstream-of-us-1\r\nX-Real-IP: 203.0.113.9\r\n")
        )
        proto, upstream = h.upstream()
        _, headers, _ = _headers(upstream.value())
        self.assertIn((b"x-forwarded-for", b"203.0.113.9, 192.0.2.7"), headers)
        self.assertIn((b"x-forwarded-proto", b"https"), headers)
        self.assertIn((b"x-real-ip", b"203.0.113.9"), headers)
        self.assertIn((b"x-request-id", b"upstream-of-us-1"), headers)
        self.assertIn(
            (b"forwarded", b"for=192.0.2.7;by=127.0.0.1;host=a.com;proto=http"), headers
        )
        proto.dataReceived(OK)
        _, back, _ = _headers(client.value())
        self.assertIn((b"x-request-id", b"upstream-of-us-1"), back)
