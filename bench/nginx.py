"""
nginx configurations for the benchmark: the fast upstream (two ports, a
1 KiB, a 1 MiB and a sparse 1 GiB body, a POST sink, stub_status) and nginx
as the reference reverse proxy in front of it.

Everything nginx writes goes under a private directory: no root-owned path
is touched. Each instance is one process (C{master_process off}), so the pid
we start is the pid that serves and the one we measure.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.request
from pathlib import Path

NGINX = "/usr/sbin/nginx"

SMALL_BODY = 1024
LARGE_BODY = 1024 * 1024
HUGE_BODY = 1024 * 1024 * 1024


def nginxPath() -> str | None:
    """
    The nginx binary, or None when there is none.
    """
    if os.access(NGINX, os.X_OK):
        return NGINX
    return shutil.which("nginx")


def _common(prefix: Path, name: str) -> str:
    """
    Directives shared by both instances: one process, private paths.
    """
    return f"""
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {prefix}/{name}.pid;
error_log {prefix}/{name}-error.log warn;
events {{ worker_connections 8192; }}
"""


def _httpCommon(prefix: Path, name: str, accessLog: bool = False) -> str:
    temp = prefix / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    log = f"{prefix}/{name}-access.log" if accessLog else "off"
    return f"""
    access_log {log};
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    types {{ }}
    default_type application/octet-stream;
"""


def writeBodies(root: Path) -> None:
    """
    Write the response bodies: 1 KiB, 1 MiB, and a sparse 1 GiB file that
    takes no disk space.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "1k").write_bytes(b"k" * SMALL_BODY)
    (root / "1m").write_bytes(b"m" * LARGE_BODY)
    (root / "post").write_bytes(b"")
    with open(root / "1g", "wb") as f:
        f.truncate(HUGE_BODY)


def upstreamConfig(prefix: Path, ports: tuple[int, int], statusPort: int) -> Path:
    """
    Write the upstream's configuration: the same content on two ports,
    C{/post} reads whole bodies up to 2 MiB, then answers 1 KiB, and
    stub_status on its own port.
    """
    root = prefix / "www"
    writeBodies(root)
    conf = prefix / "upstream.conf"
    conf.write_text(
        _common(prefix, "upstream")
        + f"""
http {{
{_httpCommon(prefix, "upstream")}
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{ports[0]} backlog=4096;
        listen 127.0.0.1:{ports[1]} backlog=4096;
        root {root};
        location = /post {{
            client_max_body_size 2m;
            client_body_buffer_size 2m;
            # The whole body is read before the answer, as an application
            # would (`return` would answer at once and discard the body as
            # it comes, which makes a streaming proxy drop the connection):
            # the mirror reads it first; then the static module refuses a
            # POST to the (empty) file post with 405, turned into 200 and /1k.
            mirror /post-sink;
            mirror_request_body on;
            error_page 405 =200 /1k;
        }}
        location = /post-sink {{
            internal;
            return 204;
        }}
    }}
    server {{
        listen 127.0.0.1:{statusPort};
        location / {{ stub_status; }}
    }}
}}
"""
    )
    return conf


def proxyConfig(
    prefix: Path, port: int, upstreams: tuple[int, int], accessLog: bool = True
) -> Path:
    """
    Write the configuration of nginx as a reverse proxy to both upstream
    ports, with a keep-alive pool of 64 connections.

    C{proxy_max_temp_file_size 0} keeps nginx from spooling a large response
    to disk, so that a slow reader applies backpressure as it would to us;
    C{proxy_request_buffering off} streams request bodies to the upstream as
    they arrive instead of buffering them first, and C{client_max_body_size
    0} sets no limit on their size: the same work as a streaming proxy does
    for the C{post-1m} scenario.
    """
    conf = prefix / "nginx-proxy.conf"
    conf.write_text(
        _common(prefix, "nginx-proxy")
        + f"""
http {{
{_httpCommon(prefix, "nginx-proxy", accessLog)}
    upstream backends {{
        server 127.0.0.1:{upstreams[0]};
        server 127.0.0.1:{upstreams[1]};
        keepalive 64;
        # The default (1000) would reopen a connection every 1000 requests.
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        client_body_buffer_size 2m;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
            proxy_request_buffering off;
        }}
    }}
}}
"""
    )
    return conf


def argv(binary: str, prefix: Path, conf: Path) -> list[str]:
    """
    The command line that runs nginx in the foreground on C{conf}.
    """
    return [binary, "-p", f"{prefix}/", "-e", f"{prefix}/startup-error.log", "-c", str(conf)]


def acceptedConnections(statusPort: int) -> int:
    """
    The upstream's count of accepted connections (stub_status C{accepts}),
    including the connection that asks: between two calls, the traffic
    opened C{after - before - 1} connections.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{statusPort}/", timeout=5) as r:
        text = r.read().decode()
    match = re.search(r"accepts handled requests\s+(\d+)", text)
    if match is None:
        raise RuntimeError(f"unexpected stub_status answer: {text!r}")
    return int(match.group(1))
