"""callctl.httpd over real HTTP on loopback: /metrics, /healthz, /readyz and /calls control."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from callctl import config
from callctl.httpd import MAX_BODY, HttpServer
from callctl.metrics import Metrics


def _cfg(**metrics: Any) -> config.Config:
    return config.replace(config.from_mapping({}, env={}), metrics={"listen_port": 0, **metrics})


def fetch(method: str, url: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """A real blocking HTTP request, run in the hub's threadpool so the gevent server (same
    hub) keeps serving while we wait."""

    def do() -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    result: tuple[int, bytes, dict[str, str]] = gevent.get_hub().threadpool.apply(do)
    return result


def fetch_json(method: str, url: str, payload: Any = None) -> tuple[int, Any]:
    body = None if payload is None else json.dumps(payload).encode()
    status, raw, headers = fetch(method, url, body, {"Content-Type": "application/json"})
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(raw)


@pytest.fixture
def server(metrics: Metrics) -> Iterator[HttpServer]:
    srv = HttpServer(_cfg(), metrics)
    srv.start()
    yield srv
    srv.stop()


def url(srv: HttpServer, path: str) -> str:
    return f"http://127.0.0.1:{srv.port}{path}"


def test_metrics_endpoint_serves_the_injected_registry(server: HttpServer,
                                                       metrics: Metrics) -> None:
    metrics.turn_latency.labels(route="front_desk").observe(0.31)
    metrics.set_state_source(lambda: {"listening": 2, "speaking": 1})
    status, body, headers = fetch("GET", url(server, "/metrics"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'callctl_turn_latency_seconds_count{route="front_desk"} 1.0' in text
    assert 'callctl_calls_active{state="listening"} 2.0' in text


def test_healthz_and_unknown_path(server: HttpServer) -> None:
    assert fetch_json("GET", url(server, "/healthz")) == (200, {"alive": True})
    status, body = fetch_json("GET", url(server, "/nope"))
    assert status == 404 and "nope" in body["error"]


def test_readyz_names_what_is_not_ready(server: HttpServer) -> None:
    assert fetch_json("GET", url(server, "/readyz"))[0] == 200  # no checks yet: ready
    state = {"esl": True, "store": False}

    def models() -> bool:
        raise RuntimeError("vosk model missing")

    server.add_check("esl_control", lambda: state["esl"])
    server.add_check("store", lambda: state["store"])
    server.add_check("models", models)
    status, body = fetch_json("GET", url(server, "/readyz"))
    assert status == 503
    assert body["ready"] is False
    assert body["failing"] == ["models", "store"]
    assert body["checks"] == {"esl_control": True, "store": False, "models": False}
    assert "vosk model missing" in body["errors"]["models"]

    server.add_check("models", lambda: True)
    state["store"] = True
    status, body = fetch_json("GET", url(server, "/readyz"))
    assert (status, body["ready"], body["failing"]) == (200, True, [])


def test_readyz_check_that_hangs_is_cut_off(server: HttpServer) -> None:
    server.handler_timeout_s = 0.2
    server.add_check("esl_control", lambda: bool(gevent.sleep(30)) or True)
    status, body = fetch_json("GET", url(server, "/readyz"))
    assert status == 503 and body["failing"] == ["esl_control"]
    assert "did not answer" in body["errors"]["esl_control"]


def test_add_check_rejects_bad_names(server: HttpServer) -> None:
    with pytest.raises(ValueError, match="lower_snake_case"):
        server.add_check("ESL link", lambda: True)


def test_calls_listing(server: HttpServer) -> None:
    status, body = fetch_json("GET", url(server, "/calls"))
    assert status == 503 and "not available" in body["error"]
    calls = [{"uuid": "a1b2", "route": "front_desk", "state": "listening", "duration_s": 12.5}]
    server.set_calls_source(lambda: calls)
    assert fetch_json("GET", url(server, "/calls")) == (200, {"calls": calls})
    assert fetch_json("POST", url(server, "/calls"), {})[0] == 405


def test_hangup_and_transfer_reach_the_daemon(server: HttpServer) -> None:
    seen: list[tuple[str, str, str]] = []
    live = {"c0ffee-1"}

    def hangup(uuid: str, cause: str) -> bool:
        seen.append(("hangup", uuid, cause))
        return uuid in live

    def transfer(uuid: str, dest: str) -> bool:
        seen.append(("transfer", uuid, dest))
        return uuid in live

    assert fetch_json("POST", url(server, "/calls/c0ffee-1/hangup"), {})[0] == 503
    server.set_hangup_handler(hangup)
    server.set_transfer_handler(transfer)

    status, body = fetch_json("POST", url(server, "/calls/c0ffee-1/hangup"), {})
    assert (status, body["cause"]) == (200, "NORMAL_CLEARING")
    status, body = fetch_json("POST", url(server, "/calls/c0ffee-1/hangup"),
                              {"cause": "CALL_REJECTED"})
    assert (status, body["cause"]) == (200, "CALL_REJECTED")
    status, body = fetch_json("POST", url(server, "/calls/c0ffee-1/transfer"),
                              {"destination": "1000 XML default"})
    assert (status, body["destination"]) == (200, "1000 XML default")
    status, body = fetch_json("POST", url(server, "/calls/gone-2/hangup"), {})
    assert status == 404 and "gone-2" in body["error"]
    assert seen == [("hangup", "c0ffee-1", "NORMAL_CLEARING"),
                    ("hangup", "c0ffee-1", "CALL_REJECTED"),
                    ("transfer", "c0ffee-1", "1000 XML default"),
                    ("hangup", "gone-2", "NORMAL_CLEARING")]


def test_hangup_takes_every_cause_of_the_switch(server: HttpServer) -> None:
    """Causes beyond the old 17 (switch_call_cause_t of 1.10) reach the handler; NONE and
    misspellings do not, and the error names a close match."""
    seen: list[str] = []
    server.set_hangup_handler(lambda u, c: bool(seen.append(c)) or True)
    hangup = url(server, "/calls/c0ffee-1/hangup")
    for cause in ("NO_ROUTE_DESTINATION", "SUBSCRIBER_ABSENT", "REJECT_ALL", "DECLINE"):
        assert fetch_json("POST", hangup, {"cause": cause}) == (
            200, {"ok": True, "uuid": "c0ffee-1", "cause": cause})
    status, body = fetch_json("POST", hangup, {"cause": "NONE"})
    assert status == 400 and "unknown hangup cause" in body["error"]
    status, body = fetch_json("POST", hangup, {"cause": "NO_ROUTE_DESTINATON"})
    assert status == 400 and "did you mean NO_ROUTE_DESTINATION" in body["error"]
    assert seen == ["NO_ROUTE_DESTINATION", "SUBSCRIBER_ABSENT", "REJECT_ALL", "DECLINE"]


@pytest.mark.parametrize(("path", "payload", "status", "hint"), [
    ("/calls/c0ffee-1/hangup", {"cause": "normal clearing\r\nexit"}, 400, "hangup cause"),
    ("/calls/c0ffee-1/hangup", {"cause": 17}, 400, "hangup cause"),
    ("/calls/c0ffee-1/transfer", {}, 400, "destination"),
    ("/calls/c0ffee-1/transfer", {"destination": "1000\n\napi hupall"}, 400, "destination"),
    ("/calls/c0ffee-1/transfer", ["1000"], 400, "JSON object"),
    ("/calls/bad%20uuid/hangup", {}, 400, "uuid"),
    ("/calls/c0ffee-1/park", {}, 404, "no such path"),
])
def test_control_rejects_bad_requests(server: HttpServer, path: str, payload: Any,
                                      status: int, hint: str) -> None:
    called: list[str] = []
    server.set_hangup_handler(lambda u, c: bool(called.append(u)) or True)
    server.set_transfer_handler(lambda u, d: bool(called.append(u)) or True)
    got, body = fetch_json("POST", url(server, path), payload)
    assert got == status and hint in body["error"]
    assert called == []


def test_control_rejects_bad_bodies(server: HttpServer) -> None:
    server.set_hangup_handler(lambda u, c: True)
    hangup = url(server, "/calls/c0ffee-1/hangup")
    status, raw, _ = fetch("POST", hangup, b"{not json")
    assert status == 400 and b"not JSON" in raw
    status, raw, _ = fetch("POST", hangup, b"{}" + b" " * MAX_BODY)
    assert status == 400 and b"larger than" in raw
    status, raw, _ = fetch("GET", hangup)
    assert status == 405


def test_failing_handler_ends_only_its_request(server: HttpServer) -> None:
    def broken(uuid: str, cause: str) -> bool:
        raise KeyError(uuid)

    server.set_hangup_handler(broken)
    status, body = fetch_json("POST", url(server, "/calls/c0ffee-1/hangup"), {})
    assert status == 500 and "KeyError" in body["error"]
    server.handler_timeout_s = 0.2

    def slow() -> list[dict[str, Any]]:
        gevent.sleep(30)
        return []

    server.set_calls_source(slow)
    status, body = fetch_json("GET", url(server, "/calls"))
    assert status == 500 and "in time" in body["error"]
    assert fetch_json("GET", url(server, "/healthz"))[0] == 200


def test_control_only_from_allowed_networks(metrics: Metrics) -> None:
    srv = HttpServer(_cfg(control_allow=["10.0.0.0/8"]), metrics)
    srv.start()
    try:
        srv.set_calls_source(lambda: [])
        status, body = fetch_json("GET", url(srv, "/calls"))
        assert status == 403 and "control_allow" in body["error"]
        assert fetch("GET", url(srv, "/metrics"))[0] == 200
        assert fetch("GET", url(srv, "/readyz"))[0] == 200
    finally:
        srv.stop()


def test_control_allow_setting_is_validated() -> None:
    with pytest.raises(config.ConfigError, match=r"metrics.control_allow.*CIDR"):
        config.from_mapping({"metrics": {"control_allow": ["localhost"]}}, env={})
    cfg = config.from_mapping({}, env={"CALLCTL_METRICS_CONTROL_ALLOW": "10.1.0.0/16,::1/128"})
    assert cfg.metrics.control_allow == ["10.1.0.0/16", "::1/128"]


def test_port_in_use_is_an_error(metrics: Metrics) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        srv = HttpServer(_cfg(listen_port=s.getsockname()[1]), metrics)
        with pytest.raises(OSError):
            srv.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.port
