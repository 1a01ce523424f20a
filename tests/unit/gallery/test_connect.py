"""``connect`` with ``rediss://`` (TLS) URLs: redis-py takes the TLS options as URL parameters; turning
certificate verification off is allowed, but never silently."""

from __future__ import annotations

import logging

import pytest

from streamproc.gallery.embedded import connect


@pytest.mark.parametrize(
    ("query", "warned"),
    [
        ("ssl_cert_reqs=none", True),
        ("ssl_cert_reqs=CERT_NONE", True),
        ("ssl_check_hostname=false&ssl_ca_certs=/etc/ssl/ca.pem", True),
        ("ssl_ca_certs=/etc/ssl/ca.pem", False),
        ("ssl_cert_reqs=required", False),
        ("", False),
    ],
)
def test_tls_without_verification_is_a_warning(
    caplog: pytest.LogCaptureFixture, query: str, warned: bool
) -> None:
    url = f"rediss://:s3cret@127.0.0.1:1/0?{query}" if query else "rediss://:s3cret@127.0.0.1:1/0"
    with caplog.at_level(logging.WARNING, logger="streamproc.gallery.embedded"):
        client = connect(url)  # no connection is made until the first command
    client.close()
    warnings = [r.getMessage() for r in caplog.records if "verif" in r.getMessage()]
    assert bool(warnings) == warned, warnings
    assert all("s3cret" not in w and "anyone" in w for w in warnings)
