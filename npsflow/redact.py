"""Secrets out of what is shown: a DSN printed, logged or written to a file goes through ``redact_dsn`` first."""

from __future__ import annotations

import re

__all__ = ["redact_dsn"]


def redact_dsn(dsn: str) -> str:
    """``dsn`` without secrets: the password of ``user:password@`` becomes ``***`` (also when percent-encoded)
    and query parameters named like a password or token lose their value."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable DSN>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        query = urlencode([(k, "***" if re.search(r"pass|secret|token|key", k, re.I) else v)
                           for k, v in parse_qsl(query, keep_blank_values=True)], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return dsn  # nothing secret (urlunsplit would also turn chdb:///x into chdb:/x)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
