"""The daemon's one HTTP port: /metrics, /healthz, /readyz and the NOC control endpoints.

How this works: a gevent ``WSGIServer`` (connections bounded by a pool) serves one small WSGI
app. ``/metrics`` is prometheus_client's WSGI app on the injected registry. ``/healthz`` is 200
while the process serves HTTP at all. ``/readyz`` runs the named readiness checks the daemon
registered with ``add_check`` (ESL control link, store, models, draining...) and answers 200, or
503 with a JSON body naming the checks that failed; parts whose trouble calls survive (the
session store: ``add_status``) are reported under ``status`` without deciding readiness. The
control endpoints call functions the daemon registers; they answer only to peers inside
``metrics.control_allow`` (loopback by default), because the metrics port itself is often
opened to Prometheus:

=================================  ============================================================
``GET  /calls``                    ``{"calls": [...]}`` from ``set_calls_source``
``POST /calls/<uuid>/hangup``      body ``{"cause": "NORMAL_CLEARING"}`` (optional) -> handler
``POST /calls/<uuid>/transfer``    body ``{"destination": "1000"}`` -> handler
=================================  ============================================================

Handlers run in the request's greenlet: they must only hand the request to the call's owner
(put a message in its inbox) and return at once whether the call exists. Every check and
handler runs under a timeout; an exception in one becomes a 500 (or a failed check) for that
request only, and the server keeps running.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from prometheus_client import make_wsgi_app

from callctl.causes import HANGUP_CAUSES, unknown_cause_hint
from callctl.config import Config
from callctl.log import get_logger
from callctl.metrics import Metrics

#: Upper bound of simultaneous HTTP connections (scrapes, probes, NOC CLI).
MAX_CONNECTIONS = 64
#: Largest request body accepted by the control endpoints.
MAX_BODY = 4096
#: Time allowed to one readiness check or control handler.
HANDLER_TIMEOUT_S = 2.0

_UUID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_CAUSE = re.compile(r"^[A-Z][A-Z_]{0,63}$")
# A dialplan extension, optionally followed by dialplan and context ("1000 XML default").
# No control characters: the value ends up in an ESL command line.
_DESTINATION = re.compile(r"^[A-Za-z0-9_+*#.@:-]{1,128}( [A-Za-z0-9_.-]{1,64}){0,2}$")

CallsSource = Callable[[], Sequence[Mapping[str, Any]]]
Hangup = Callable[[str, str], bool]
Transfer = Callable[[str, str], bool]
Check = Callable[[], bool]

_Response = tuple[int, dict[str, Any]]
_StartResponse = Callable[..., Any]

log = get_logger()


class HttpServer:
    """One HTTP server on ``cfg.metrics.listen_host:listen_port``.

    Contract: construct, register checks and control functions (any time, also after
    ``start``), ``start()`` (binds; raises OSError if the port is taken), ``stop()``.
    ``port`` is the bound port (useful with ``listen_port`` 0 in tests).
    """

    def __init__(self, cfg: Config, metrics: Metrics) -> None:
        self.host = cfg.metrics.listen_host
        self._want_port = cfg.metrics.listen_port
        self._allow = [ipaddress.ip_network(c, strict=False) for c in cfg.metrics.control_allow]
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._checks: dict[str, Check] = {}
        self._statuses: dict[str, Callable[[], str]] = {}
        self._calls: CallsSource | None = None
        self._hangup: Hangup | None = None
        self._transfer: Transfer | None = None
        self._server: WSGIServer | None = None
        #: Time allowed to one readiness check or control handler (tests shorten it).
        self.handler_timeout_s = HANDLER_TIMEOUT_S

    # -- registration ---------------------------------------------------------------------

    def add_check(self, name: str, fn: Check) -> None:
        """Register readiness check ``name``: ``fn()`` returns True when that part is ready.

        ``fn`` must be quick and must not block on I/O for long: it is cut off after
        HANDLER_TIMEOUT_S and then counts as not ready. Re-adding a name replaces the check.
        """
        if not name or not re.match(r"^[a-z][a-z0-9_]*$", name):
            raise ValueError(f"check name {name!r}: use lower_snake_case")
        self._checks[name] = fn

    def add_status(self, name: str, fn: Callable[[], str]) -> None:
        """Report ``fn()`` (e.g. ``"healthy"``/``"degraded"``) under ``status`` in /readyz
        without it deciding readiness: for parts whose trouble calls survive (the store)."""
        self._statuses[name] = fn

    def set_calls_source(self, fn: CallsSource) -> None:
        """``fn()`` returns the live calls as JSON-able mappings for ``GET /calls``."""
        self._calls = fn

    def set_hangup_handler(self, fn: Hangup) -> None:
        """``fn(uuid, cause)`` asks the call's owner to hang up; False if no such call."""
        self._hangup = fn

    def set_transfer_handler(self, fn: Transfer) -> None:
        """``fn(uuid, destination)`` asks the call's owner to transfer; False if no such call."""
        self._transfer = fn

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in the background (greenlets on the current hub)."""
        server = WSGIServer(
            (self.host, self._want_port), self, spawn=Pool(MAX_CONNECTIONS),
            log=None, error_log=None,
        )
        server.start()
        self._server = server
        log.info("http_listening", host=self.host, port=self.port)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting and close connections (waits up to ``timeout`` for requests)."""
        if self._server is not None:
            self._server.stop(timeout=timeout)
            self._server = None

    @property
    def port(self) -> int:
        """The bound port (only valid after ``start``)."""
        if self._server is None:
            raise RuntimeError("HttpServer is not started")
        return int(self._server.server_port)

    # -- readiness ------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """Run every check now: ``{"ready": bool, "checks": {name: bool}, "failing": [...]}``.

        A check that raises or times out is not ready; its error is put under ``errors``.
        """
        results: dict[str, bool] = {}
        errors: dict[str, str] = {}
        for name, fn in list(self._checks.items()):
            try:
                with gevent.Timeout(self.handler_timeout_s):
                    results[name] = bool(fn())
            except gevent.Timeout:
                results[name] = False
                errors[name] = f"check did not answer within {self.handler_timeout_s} s"
            except Exception as e:
                results[name] = False
                errors[name] = f"{type(e).__name__}: {e}"
        failing = sorted(n for n, ok in results.items() if not ok)
        body: dict[str, Any] = {"ready": not failing, "checks": results, "failing": failing}
        if errors:
            body["errors"] = errors
        if self._statuses:
            body["status"] = {name: _safe_status(fn) for name, fn in self._statuses.items()}
        return body

    # -- WSGI -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        try:
            status, body = self._route(method, path, environ)
        except gevent.Timeout:
            log.warning("http_handler_timeout", path=path)
            status, body = 500, {"error": "handler did not answer in time"}
        except Exception as e:  # one bad request never takes the server down
            log.warning("http_handler_failed", path=path, error=repr(e))
            status, body = 500, {"error": f"{type(e).__name__}: {e}"}
        return _json(start_response, status, body)

    def _route(self, method: str, path: str, environ: dict[str, Any]) -> _Response:
        if path == "/healthz":
            return 200, {"alive": True}
        if path == "/readyz":
            body = self.readiness()
            return (200 if body["ready"] else 503), body
        parts = path.strip("/").split("/")
        if parts[0] != "calls":
            return 404, {"error": f"no such path {path[:100]!r}"}
        if not self._peer_allowed(environ.get("REMOTE_ADDR", "")):
            return 403, {"error": "control endpoints are not allowed from this address "
                                  "(metrics.control_allow)"}
        if len(parts) == 1:
            if method != "GET":
                return 405, {"error": "use GET /calls"}
            if self._calls is None:
                return 503, {"error": "call listing not available yet"}
            with gevent.Timeout(self.handler_timeout_s):
                return 200, {"calls": [dict(c) for c in self._calls()]}
        if len(parts) == 3 and parts[2] in ("hangup", "transfer"):
            if method != "POST":
                return 405, {"error": f"use POST /calls/<uuid>/{parts[2]}"}
            if not _UUID.match(parts[1]):
                return 400, {"error": "bad call uuid"}
            request = _read_json(environ)
            if isinstance(request, str):
                return 400, {"error": request}
            if parts[2] == "hangup":
                return self._do_hangup(parts[1], request)
            return self._do_transfer(parts[1], request)
        return 404, {"error": f"no such path {path[:100]!r}"}

    def _do_hangup(self, uuid: str, request: Mapping[str, Any]) -> _Response:
        cause = request.get("cause", "NORMAL_CLEARING")
        if not isinstance(cause, str) or not _CAUSE.match(cause):
            return 400, {"error": "cause must be a hangup cause name like NORMAL_CLEARING"}
        if cause not in HANGUP_CAUSES:      # not a cause FreeSWITCH knows: it would not use it
            return 400, {"error": f"unknown hangup cause {cause!r}: {unknown_cause_hint(cause)}"}
        if self._hangup is None:
            return 503, {"error": "hangup not available yet"}
        with gevent.Timeout(self.handler_timeout_s):
            found = self._hangup(uuid, cause)
        if not found:
            return 404, {"error": f"no live call {uuid}"}
        log.info("noc_hangup", call_uuid=uuid, cause=cause)
        return 200, {"ok": True, "uuid": uuid, "cause": cause}

    def _do_transfer(self, uuid: str, request: Mapping[str, Any]) -> _Response:
        dest = request.get("destination")
        if not isinstance(dest, str) or not _DESTINATION.match(dest):
            return 400, {"error": "destination must be an extension, optionally followed by "
                                  "dialplan and context, e.g. \"1000 XML default\""}
        if self._transfer is None:
            return 503, {"error": "transfer not available yet"}
        with gevent.Timeout(self.handler_timeout_s):
            found = self._transfer(uuid, dest)
        if not found:
            return 404, {"error": f"no live call {uuid}"}
        log.info("noc_transfer", call_uuid=uuid, destination=dest)
        return 200, {"ok": True, "uuid": uuid, "destination": dest}

    def _peer_allowed(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._allow)


def _read_json(environ: Mapping[str, Any]) -> dict[str, Any] | str:
    """The request body as a JSON object ({} when empty), or an error text."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return "bad Content-Length"
    if length > MAX_BODY:
        return f"body larger than {MAX_BODY} bytes"
    if length <= 0:
        return {}
    raw = environ["wsgi.input"].read(length)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return f"body is not JSON: {raw[:60]!r}"
    if not isinstance(data, dict):
        return "body must be a JSON object"
    return data


def _json(start_response: _StartResponse, status: int, body: Mapping[str, Any]) -> list[bytes]:
    data = json.dumps(body, default=str).encode()
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
              405: "Method Not Allowed", 500: "Internal Server Error",
              503: "Service Unavailable"}[status]
    start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(data))),
                                          ("Cache-Control", "no-store")])
    return [data]


__all__ = ["HttpServer"]


def _safe_status(fn: Callable[[], str]) -> str:
    try:
        return str(fn())
    except Exception as e:
        return f"unknown ({type(e).__name__})"
