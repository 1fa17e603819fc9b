"""Minimal Confluent Schema Registry client (the two endpoints the codec needs).

* ``POST /subjects/{subject}/versions`` with ``{"schema": "<json text>"}`` -> ``{"id": N}``
  (idempotent: re-registering an identical schema returns the existing id).
* ``GET /schemas/ids/{id}`` -> ``{"schema": "<json text>"}``.

Subject naming: npsflow uses the **record full name** as the subject
(Confluent's ``RecordNameStrategy``, e.g. ``io.npsflow.RawResponse``), because the
codec is keyed by record type and one record type may travel on several topics
(dead letters, replays).  Pass ``subject_name_strategy`` to ``AvroCodec`` to use
e.g. ``lambda name: f"{topic}-value"`` instead.

Both calls are cached in-process (ids are immutable in a registry), use a
timeout, and raise :class:`RegistryError` with the HTTP status, the registry's
``error_code`` and message.
"""
from __future__ import annotations

import threading
from urllib.parse import quote

import requests

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ENV_REGISTRY_URL = "NPSFLOW_SCHEMA_REGISTRY_URL"


class RegistryError(Exception):
    """A schema registry call failed. ``not_found`` is True for 404 (unknown id/subject)."""

    def __init__(self, message: str, status: int | None = None, error_code: int | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code

    @property
    def not_found(self) -> bool:
        return self.status == 404


class SchemaRegistryClient:
    def __init__(self, url: str, timeout: float = 5.0, session: requests.Session | None = None):
        # A comma-separated list is accepted (Confluent convention); the first URL is used.
        self.url = url.split(",")[0].strip().rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise RegistryError(f"schema registry URL must start with http:// or https://: {url!r}")
        self.timeout = timeout
        self._session = session or requests.Session()
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}

    def _call(self, method: str, path: str, **kw) -> dict:
        url = self.url + path
        try:
            resp = self._session.request(method, url, timeout=self.timeout,
                                         headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE}, **kw)
        except requests.RequestException as exc:
            raise RegistryError(f"schema registry {method} {url} failed: {type(exc).__name__}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            code = body.get("error_code") if isinstance(body, dict) else None
            msg = body.get("message") if isinstance(body, dict) else resp.text[:200]
            raise RegistryError(f"schema registry {method} {url} -> HTTP {resp.status_code}"
                                f"{f' (error_code {code})' if code else ''}: {msg}",
                                status=resp.status_code, error_code=code)
        if not isinstance(body, dict):
            raise RegistryError(f"schema registry {method} {url} returned non-JSON-object body",
                                status=resp.status_code)
        return body

    def register(self, subject: str, schema_str: str) -> int:
        """Register (or look up) *schema_str* under *subject*; returns the global schema id."""
        key = (subject, schema_str)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        body = self._call("POST", f"/subjects/{quote(subject, safe='')}/versions", json={"schema": schema_str})
        sid = body.get("id")
        if not isinstance(sid, int):
            raise RegistryError(f"schema registry register {subject}: response has no integer id: {body}")
        with self._lock:
            self._ids[key] = sid
            self._schemas.setdefault(sid, schema_str)
        return sid

    def get_schema(self, schema_id: int) -> str:
        """Schema text for a global id (raises RegistryError, ``not_found`` for unknown ids)."""
        with self._lock:
            if schema_id in self._schemas:
                return self._schemas[schema_id]
        body = self._call("GET", f"/schemas/ids/{int(schema_id)}")
        text = body.get("schema")
        if not isinstance(text, str):
            raise RegistryError(f"schema registry id {schema_id}: response has no schema: {body}")
        if body.get("schemaType", "AVRO") != "AVRO":
            raise RegistryError(f"schema registry id {schema_id} is a {body['schemaType']} schema, not AVRO")
        with self._lock:
            self._schemas[schema_id] = text
        return text
