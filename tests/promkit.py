"""A real Prometheus for tests (Debian ``prometheus`` package) scraping callctl HTTP servers on
loopback, and the small HTTP helpers the Prometheus tests share. Plain code: import it as
``from promkit import …`` (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import gevent
import pytest
import yaml
from testkit import free_port

REPO = Path(__file__).resolve().parent.parent
GRAFANA = REPO / "grafana"
RULES = GRAFANA / "alerts" / "callctl-rules.yml"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Grafana's built-in variables and our template variables, as the test evaluates them.
SUBSTITUTE = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m",
              "route": ".*", "instance": ".*"}


def substitute(expr: str) -> str:
    """Replace $var / ${var} with the values in SUBSTITUTE; unknown variables are an error."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in SUBSTITUTE:
            raise AssertionError(f"unknown template variable ${name} in {expr!r}")
        return SUBSTITUTE[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target in every dashboard."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']} [{t['refId']}]", t["expr"]))
    return out


needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian prometheus package not installed (run .ci/setup)")


def write_prometheus_config(tmp: Path, targets: list[str]) -> Path:
    """prometheus.yml scraping ``targets`` every second, with the shipped alert rules."""
    cfg = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "callctl",
                            "static_configs": [{"targets": targets}]}],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def http_json(url: str) -> Any:
    """GET a JSON document; the blocking call runs in the threadpool so the gevent HTTP
    servers Prometheus scrapes keep serving meanwhile."""

    def do() -> Any:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    return gevent.get_hub().threadpool.apply(do)


class Prometheus:
    """A real prometheus process on a loopback port with its TSDB in a temp dir."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={write_prometheus_config(tmp, targets)}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = tmp / "prometheus.log"

    def wait_ready(self, deadline: float) -> None:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{self.base}/-/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            if gevent.get_hub().threadpool.apply(ready):
                return
            gevent.sleep(0.2)
        raise AssertionError("prometheus did not become ready: "
                             + self.log_path.read_text()[-2000:])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; a PromQL error fails the test at once (it would not fix itself)."""
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            body = http_json(url)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"query failed: {expr}\n{e.read().decode()}") from None
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


def has_finite_sample(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


