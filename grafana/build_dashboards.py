#!/usr/bin/env python3
"""Generate grafana/dashboards/*.json from the panel lists below (standard library only).

Usage: ``python grafana/build_dashboards.py`` rewrites the JSON files; ``--check`` exits 1 if
they differ from what this script would write (CI runs it through
tests/test_grafana_prometheus.py). Edit the panels here, never the JSON.

Every PromQL expression in the dashboards is evaluated against a real Prometheus by
tests/test_grafana_prometheus.py, which reads the JSON files: a new panel is covered without
editing the test. Template variables: ``$ds`` (the Prometheus data source), ``$route``
(turn-latency dashboard) and ``$instance`` (node-health dashboard).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DS = {"type": "prometheus", "uid": "${ds}"}
BUDGET_S = 0.4  # DESIGN.md: people expect 200-400 ms; alert rules use the same line

Panel = dict[str, Any]


def target(expr: str, legend: str = "", ref: str = "A", fmt: str = "time_series") -> dict[str, Any]:
    t = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref,
         "format": fmt}
    if fmt == "heatmap":
        t["interval"] = ""
    return t


def panel(kind: str, title: str, targets: list[dict], *, unit: str = "short",
          desc: str = "", thresholds: list[tuple[float | None, str]] | None = None,
          threshold_line: bool = False, stack: bool = False, w: int = 12, h: int = 8,
          options: dict | None = None, custom: dict | None = None) -> Panel:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    cust: dict[str, Any] = {}
    if kind == "timeseries":
        cust = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                "spanNulls": False,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                "thresholdsStyle": {"mode": "line" if threshold_line else "off"}}
    cust.update(custom or {})
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return {
        "type": kind, "title": title, "description": desc, "datasource": DS,
        "targets": targets, "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "custom": cust,
                                     "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": options or {"legend": {"displayMode": "list", "placement": "bottom"},
                               "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, expr: str, *, unit: str = "short", desc: str = "",
         thresholds: list[tuple[float | None, str]] | None = None, w: int = 4,
         mappings: list[dict] | None = None) -> Panel:
    p = panel("stat", title, [target(expr)], unit=unit, desc=desc, thresholds=thresholds,
              w=w, h=4, options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                                   "values": False},
                                 "colorMode": "background", "graphMode": "none"})
    p["fieldConfig"]["defaults"]["mappings"] = mappings or []
    return p


def q(p: float, metric: str, sel: str, by: str = "") -> str:
    """``histogram_quantile`` of a histogram over $__rate_interval, summed ``by`` labels."""
    extra = f", {by}" if by else ""
    return (f"histogram_quantile({p}, sum by (le{extra}) "
            f"(rate({metric}_bucket{{{sel}}}[$__rate_interval])))")


def rate(metric: str, sel: str, by: str = "") -> str:
    grp = f" by ({by})" if by else ""
    return f"sum{grp} (rate({metric}{{{sel}}}[$__rate_interval]))"


UP_DOWN = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"},
                                         "1": {"text": "UP", "color": "green"}}}]
RED_BELOW_1: list[tuple[float | None, str]] = [(None, "red"), (1, "green")]


def layout(panels: list[Panel]) -> list[Panel]:
    """Place panels left to right, wrapping at 24 columns; number them."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        gp = p["gridPos"]
        if x + gp["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        gp.update(x=x, y=y)
        x += gp["w"]
        row_h = max(row_h, gp["h"])
        p["id"] = i
    return panels


def variables(extra: list[dict]) -> dict:
    ds = {"name": "ds", "label": "Data source", "type": "datasource", "query": "prometheus",
          "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []}
    return {"list": [ds, *extra]}


def query_var(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": query, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "sort": 1, "hide": 0,
            "regex": "", "options": []}


def dashboard(uid: str, title: str, desc: str, panels: list[Panel], templ: list[dict]) -> dict:
    return {
        "uid": uid, "title": title, "description": desc, "tags": ["callctl"],
        "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": "30s", "time": {"from": "now-3h", "to": "now"}, "timezone": "",
        "templating": variables(templ), "annotations": {"list": []}, "links": [],
        "panels": layout(panels),
    }


# ---------------------------------------------------------------------------------------------
# Dashboard 1: turn latency (per route)
# ---------------------------------------------------------------------------------------------

R = 'route=~"$route"'
TURN = "callctl_turn_latency_seconds"
LATENCY_STEPS = [(None, "green"), (0.3, "yellow"), (BUDGET_S, "red")]


def turn_latency() -> dict:
    panels = [
        panel("timeseries", "Turn latency p50 / p95 / p99 (400 ms budget)",
              [target(q(0.5, TURN, R), "p50"), target(q(0.95, TURN, R), "p95"),
               target(q(0.99, TURN, R), "p99")],
              unit="s", thresholds=LATENCY_STEPS, threshold_line=True, w=16,
              desc="Caller speech end to first reply audio at the switch. The red line is "
                   "the 400 ms budget the CallctlTurnLatencyHigh alert uses."),
        stat("Turn latency p95 (selected routes)", q(0.95, TURN, R), unit="s",
             thresholds=LATENCY_STEPS, w=4),
        stat("Turns per second", rate(f"{TURN}_count", R), unit="ops", w=4),
        panel("timeseries", "Per-hop p95",
              [target(q(0.95, "callctl_hop_seconds", "", "hop"), "{{hop}}")],
              unit="s", desc="Where the time goes: p95 of each hop (all routes; hops are not "
                              "labelled by route)."),
        panel("timeseries", "Mean time per hop (stacked ≈ mean turn)",
              [target("sum by (hop) (rate(callctl_hop_seconds_sum[$__rate_interval])) / "
                      "sum by (hop) (rate(callctl_hop_seconds_count[$__rate_interval]))",
                      "{{hop}}")],
              unit="s", stack=True,
              desc="Mean seconds per hop, stacked: the stack height approximates the mean "
                   "turn latency."),
        panel("heatmap", "Turn latency distribution",
              [target(f"sum by (le) (increase({TURN}_bucket{{{R}}}[$__rate_interval]))",
                      "{{le}}", fmt="heatmap")],
              unit="s", w=24,
              options={"calculate": False, "yAxis": {"unit": "s"},
                       "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges",
                                               "steps": 64},
                       "rowsFrame": {"layout": "auto"},
                       "tooltip": {"show": True, "yHistogram": True}}),
        panel("timeseries", "Active calls by state",
              [target("sum by (state) (callctl_calls_active)", "{{state}}")],
              stack=True, desc="Read from the daemons at scrape time (all routes)."),
        panel("timeseries", "Calls ended by outcome",
              [target(rate("callctl_calls_total", R, "outcome"), "{{outcome}}")],
              unit="cps", stack=True),
        panel("timeseries", "Barge-ins by kind",
              [target(rate("callctl_bargeins_total", "", "kind"), "{{kind}}")], unit="ops",
              desc="speech / dtmf are real interruptions; false = the bot was cut for noise "
                   "or a backchannel and said the sentence again; paused / unpaused = "
                   "pause-then-decide paused the bot / let it go on (file playback)."),
        panel("timeseries", "False barge-in share and pauses that went on",
              [target('sum(rate(callctl_bargeins_total{kind="false"}[$__rate_interval])) / '
                      'sum(rate(callctl_bargeins_total{kind=~"speech|dtmf|false"}'
                      "[$__rate_interval]))", "false / cuts"),
               target('sum(rate(callctl_bargeins_total{kind="unpaused"}[$__rate_interval])) / '
                      'sum(rate(callctl_bargeins_total{kind="paused"}[$__rate_interval]))',
                      "went on / paused")],
              unit="percentunit",
              desc="A high 'went on / paused' share means callers often say \"mhm\" over "
                   "the bot: it hesitates, then continues."),
        panel("timeseries", "Barge-in latency and answer to first audio (p95)",
              [target(q(0.95, "callctl_bargein_latency_seconds", R), "barge-in p95"),
               target(q(0.95, "callctl_answer_to_first_audio_seconds", R),
                      "answer → first audio p95")], unit="s"),
        panel("timeseries", "Hangup causes",
              [target(rate("callctl_calls_total", R, "cause"), "{{cause}}")], unit="cps"),
        panel("timeseries", "Errors",
              [target(rate("callctl_protocol_errors_total", "", "source, kind"),
                      "protocol {{source}} {{kind}}"),
               target(rate("callctl_engine_failures_total", "", "engine"),
                      "engine {{engine}}"),
               target(rate("callctl_store_writes_lost_total", ""), "store writes lost"),
               target(rate("callctl_ws_rejected_total", "", "reason"), "ws rejected {{reason}}"),
               target(rate("callctl_calls_rejected_total", "", "reason"),
                      "call rejected {{reason}}")],
              unit="ops", w=24),
    ]
    return dashboard(
        "callctl-turn-latency", "callctl — turn latency",
        "How fast the bot answers, per route, and where the time goes.", panels,
        [query_var("route", "Route", f"label_values({TURN}_count, route)")])


# ---------------------------------------------------------------------------------------------
# Dashboard 2: one node's health
# ---------------------------------------------------------------------------------------------

I = 'instance=~"$instance"'  # noqa: E741


def node_health() -> dict:
    panels = [
        stat("Scrape up", f'min(up{{job="callctl", {I}}})', mappings=UP_DOWN,
             thresholds=RED_BELOW_1),
        stat("Ready", f"min(callctl_ready{{{I}}})", mappings=UP_DOWN, thresholds=RED_BELOW_1,
             desc="1 while the daemon takes calls; see /readyz for what is not ready."),
        stat("ESL connected", f"min(callctl_esl_connected{{{I}}})", mappings=UP_DOWN,
             thresholds=RED_BELOW_1),
        stat("Store up", f"min(callctl_store_up{{{I}}})", mappings=UP_DOWN,
             thresholds=RED_BELOW_1),
        stat("Active calls", f"sum(callctl_calls_active{{{I}}})"),
        stat("Store queue depth", f"sum(callctl_store_queue_depth{{{I}}})",
             thresholds=[(None, "green"), (1000, "yellow"), (5000, "red")]),
        panel("timeseries", "Ready / ESL / store (per node)",
              [target(f"callctl_ready{{{I}}}", "ready {{instance}}"),
               target(f"callctl_esl_connected{{{I}}}", "esl {{instance}}"),
               target(f"callctl_store_up{{{I}}}", "store {{instance}}")]),
        panel("timeseries", "ESL reconnects",
              [target(f"sum by (instance) (increase(callctl_esl_reconnects_total{{{I}}}"
                      "[$__rate_interval]))", "{{instance}}")]),
        panel("timeseries", "ESL command latency p95",
              [target(q(0.95, "callctl_esl_command_seconds", I, "command"), "{{command}}")],
              unit="s"),
        panel("timeseries", "Audio frames dropped",
              [target(rate("callctl_audio_frames_dropped_total", I, "instance"),
                      "{{instance}}")], unit="ops",
              desc="Inbox overflow: the call's owner did not keep up with its audio."),
        panel("timeseries", "Store queue depth and writes lost",
              [target(f"sum by (instance) (callctl_store_queue_depth{{{I}}})",
                      "queued {{instance}}"),
               target(rate("callctl_store_writes_lost_total", I, "instance"),
                      "lost/s {{instance}}")]),
        panel("timeseries", "ASR / TTS real-time factor p95",
              [target(q(0.95, "callctl_asr_real_time_factor_ratio", I, "engine"),
                      "asr {{engine}}"),
               target(q(0.95, "callctl_tts_real_time_factor_ratio", I, "engine"),
                      "tts {{engine}}")],
              thresholds=[(None, "green"), (1, "red")], threshold_line=True,
              desc="Processing time / audio time; above 1 the engine falls behind."),
        panel("timeseries", "TTS prompt cache hit ratio",
              [target(f'sum(rate(callctl_tts_cache_total{{result="hit", {I}}}'
                      "[$__rate_interval])) / "
                      f"sum(rate(callctl_tts_cache_total{{{I}}}[$__rate_interval]))",
                      "hit ratio")], unit="percentunit"),
        panel("timeseries", "Recognizers: created vs reused vs primed",
              [target(rate("callctl_asr_recognizers_created_total", I, "engine"),
                      "created {{engine}}"),
               target(rate("callctl_asr_recognizers_reused_total", I, "engine"),
                      "reused {{engine}}"),
               target(rate("callctl_asr_recognizers_primed_total", I, "engine"),
                      "primed {{engine}}")], unit="ops"),
        panel("timeseries", "ASR decode slot wait p95",
              [target(q(0.95, "callctl_asr_decode_wait_seconds", I, "priority"),
                      "{{priority}}")], unit="s",
              thresholds=[(None, "green"), (0.1, "red")], threshold_line=True,
              desc="Time recognizer work waited for one of asr.decode_threads slots. Urgent "
                   "(a turn's end) waiting long = the node is CPU-bound: callers wait."),
        panel("timeseries", "Engine failures and protocol errors",
              [target(rate("callctl_engine_failures_total", I, "engine"), "{{engine}}"),
               target(rate("callctl_protocol_errors_total", I, "source, kind"),
                      "{{source}} {{kind}}")], unit="ops", w=24),
    ]
    return dashboard(
        "callctl-node-health", "callctl — node health",
        "One callctl node: control link, store, engines, drops.", panels,
        [query_var("instance", "Node", "label_values(callctl_ready, instance)")])


DASHBOARDS = {"callctl-turn-latency.json": turn_latency, "callctl-node-health.json": node_health}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {name: json.dumps(fn(), indent=2, ensure_ascii=False) + "\n"
            for name, fn in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = OUT / name
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}: run python grafana/build_dashboards.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
