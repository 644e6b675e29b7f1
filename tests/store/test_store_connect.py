"""Connecting: password, TLS (rediss://), Sentinel, and the password kept out of logs/reprs.
Each test runs its own real redis-server (or sentinel) on a loopback port."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
import redis
import structlog.testing
from store_helpers import Proc, free_port, new_call, store_config

from callctl.config import StoreConfig
from callctl.metrics import Metrics
from callctl.store import StoreUnavailable, open_store
from callctl.store.memory import MemoryStore
from callctl.store.redis import RedisStore, parse_sentinel_url

PASSWORD = "s3cretPassw0rdXYZ"


@pytest.fixture
def protected(tmp_path: Path) -> Iterator[Proc]:
    port = free_port()
    proc = Proc(["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(tmp_path), "--requirepass", PASSWORD], port)
    yield proc
    proc.stop()


def _roundtrip(store: RedisStore) -> None:
    rec = new_call()
    store.call_started(rec)
    assert store.flush(5), "writes did not reach Redis"
    got = store.get_call(rec.uuid)
    assert got is not None and got.did == rec.did


def test_password_works_and_never_shows(protected: Proc, metrics: Metrics) -> None:
    good_url = f"redis://:{PASSWORD}@127.0.0.1:{protected.port}/0"
    bad_pw = PASSWORD[::-1]
    bad_url = f"redis://:{bad_pw}@127.0.0.1:{protected.port}/0"
    with structlog.testing.capture_logs() as logs:
        good = RedisStore(store_config(good_url), metrics, retry_min_s=0.02)
        good.start()
        _roundtrip(good)
        bad = RedisStore(store_config(bad_url), None, retry_min_s=0.02, ping_interval_s=0.05)
        bad.start()
        bad.save_call(new_call())
        deadline = time.monotonic() + 5
        while bad.healthy and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert not bad.healthy
        with pytest.raises(StoreUnavailable) as err:
            bad.get_call("x")
        shown = [repr(good), repr(bad), str(err.value), repr(err.value), good.url, bad.url]
        good.close(1)
        bad.close(0.1)
    assert any(e["event"] == "store_down" for e in logs)
    assert any(e["event"] == "store_started" for e in logs)
    text = repr(logs) + " ".join(shown)
    assert PASSWORD not in text and bad_pw not in text
    assert "127.0.0.1" in text and "***" in text


def test_bad_url_error_hides_password() -> None:
    with pytest.raises(ValueError) as err:
        RedisStore(store_config(f"http://:{PASSWORD}@h:1/0"))
    assert PASSWORD not in str(err.value)
    with pytest.raises(ValueError) as err:
        parse_sentinel_url(f"redis://:{PASSWORD}@h1:26379,h2:x/0")
    assert PASSWORD not in str(err.value) and "h2:x" in str(err.value)


def test_parse_sentinel_url() -> None:
    t = parse_sentinel_url("rediss://app:p%40ss@s1:26379,s2:26380,[::1]:26381/2")
    assert t.sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26381))
    assert (t.username, t.password, t.db, t.ssl) == ("app", "p@ss", 2, True)
    t = parse_sentinel_url("redis://s1")
    assert t.sentinels == (("s1", 26379),) and t.password is None and t.db == 0


def _tls_files(d: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, crt = (d / n for n in ("ca.key", "ca.crt", "r.key", "r.csr", "r.crt"))
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for cmd in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=callctl test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, cmd)], check=True, capture_output=True)
    return ca, crt, key


def test_tls_with_password(tmp_path: Path, metrics: Metrics) -> None:
    ca, crt, key = _tls_files(tmp_path)
    port = free_port()
    proc = Proc(["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                 "--tls-cert-file", str(crt), "--tls-key-file", str(key),
                 "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", PASSWORD],
                port)
    try:
        store = RedisStore(store_config(f"rediss://:{PASSWORD}@localhost:{port}/0",
                                        tls_ca_file=str(ca)), metrics, retry_min_s=0.02)
        store.start()
        _roundtrip(store)
        store.close(1)
        # Without TLS the same port does not answer the protocol: degraded, never a crash.
        plain = RedisStore(store_config(f"redis://:{PASSWORD}@localhost:{port}/0",
                                        timeout_s=0.2), None, ping_interval_s=0.05)
        with pytest.raises(StoreUnavailable):
            plain.owner("x")
        plain.close(0.1)
    finally:
        proc.stop()


def test_sentinel_finds_the_master(tmp_path: Path, protected: Proc) -> None:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {protected.port} 1\n"
                    f"sentinel auth-pass mymaster {PASSWORD}\n")
    sentinel = Proc([str(conf), "--sentinel"], port)
    try:
        cfg = store_config(f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
                           sentinel_master="mymaster")
        store = RedisStore(cfg, None, retry_min_s=0.02)
        store.start()
        _roundtrip(store)
        assert PASSWORD not in repr(store)
        store.close(1)
        master = redis.Redis(port=protected.port, password=PASSWORD, decode_responses=True)
        assert master.scard(f"{cfg.namespace}:calls:active") == 1
        master.close()
    finally:
        sentinel.stop()


def test_open_store_picks_backend(redis_url: str, metrics: Metrics) -> None:
    with structlog.testing.capture_logs() as logs:
        mem = open_store(StoreConfig())
        mem.start()
        mem.start()
    assert isinstance(mem, MemoryStore)
    assert [e["event"] for e in logs].count("store_in_memory") == 1
    store: Any = open_store(store_config(redis_url), metrics)
    assert isinstance(store, RedisStore)
    store.close(0.1)
