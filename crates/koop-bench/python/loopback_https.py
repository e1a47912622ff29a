"""Installed (with a .pth file) into the original package's benchmark environment only: the
original builds every URL as `https://{domain}/…`, and koop-testkit listens on plain HTTP on
loopback. This sends the original's requests to the hosts named in KOOP_BENCH_PLAIN_HTTP_HOSTS
(host:port, comma-separated) over plain HTTP, changing nothing else of its requests: no TLS
handshake is paid, which if anything favours the original."""

import os

hosts = [host for host in os.environ.get("KOOP_BENCH_PLAIN_HTTP_HOSTS", "").split(",") if host]
if hosts:
    import requests

    _request = requests.Session.request

    def request(self, method, url, *args, **kwargs):
        for host in hosts:
            prefix = f"https://{host}/"
            if url.startswith(prefix):
                url = f"http://{host}/" + url[len(prefix):]
        return _request(self, method, url, *args, **kwargs)

    requests.Session.request = request
