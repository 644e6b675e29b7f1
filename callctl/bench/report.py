"""The benchmark report: JSON document, its schema check, and the one-screen text summary.

Schema (every latency is ``{"p50", "p95", "p99", "n"}`` in milliseconds, p* null when n=0):
``turn_latency_ms``, ``hops_ms`` (hop name -> latency), ``bargein_ms``,
``answer_to_first_audio_ms``, ``false_bargein_rate`` (0..1: backchannels and noise bursts
during bot audio that stopped it), ``false_bargein`` (per kind, ``backchannel`` and ``noise``:
``{"rate": 0..1, "hits": int, "n": int}``, hits <= n), optional ``bargein_pause_rate``
(0..1: backchannels and noise during bot audio that only paused it) and ``bargein_pause_ms``
(how long those pauses lasted), ``missed_turns`` (int), optional ``premature_replies``
(``{"hits", "n", "rate"}``: utterances and barge-ins during which bot audio started),
``premature_by_kind`` (the same per scenario: plain, comma, pause, bargein) and
``premature_into_pause_ms``, ``wer``
(0..∞ or null), ``cpu_s_per_call_min``, ``peak_rss_mb``, ``baseline`` (the same keys for the
cloud-style pipeline, without ``baseline``/``config``/``machine``), ``ratio`` (callctl p50 /
baseline p50 and p95 / p95), ``sweep`` (list of per-concurrency rows, may be empty),
``config`` (what ran), ``machine`` (where it ran).
"""

from __future__ import annotations

import os
import platform
from typing import Any

LATENCY_KEYS = ("turn_latency_ms", "bargein_ms", "answer_to_first_audio_ms")
FALSE_BARGEIN_KINDS = ("backchannel", "noise")
TOP_KEYS = ("turn_latency_ms", "hops_ms", "bargein_ms", "false_bargein_rate", "wer",
            "cpu_s_per_call_min", "baseline", "config", "machine")


class ReportError(ValueError):
    """The report does not follow the schema; the message names the path."""


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def _check_latency(path: str, v: Any) -> None:
    if not isinstance(v, dict) or set(v) != {"p50", "p95", "p99", "n"}:
        raise ReportError(f"{path}: must be an object with p50, p95, p99, n")
    if not isinstance(v["n"], int) or v["n"] < 0:
        raise ReportError(f"{path}.n: must be a count")
    for k in ("p50", "p95", "p99"):
        if v[k] is None:
            if v["n"]:
                raise ReportError(f"{path}.{k}: null with n={v['n']}")
        elif not isinstance(v[k], int | float) or v[k] < 0:
            raise ReportError(f"{path}.{k}: must be milliseconds >= 0")


def _check_count(where: str, v: Any) -> None:
    if not isinstance(v, dict) or set(v) != {"rate", "hits", "n"}:
        raise ReportError(f"{where}: must be an object with rate, hits, n")
    if not all(isinstance(v[k], int) and not isinstance(v[k], bool) and v[k] >= 0
               for k in ("hits", "n")) or v["hits"] > v["n"]:
        raise ReportError(f"{where}: hits and n must be counts, hits <= n")
    if not isinstance(v["rate"], int | float) or not 0 <= v["rate"] <= 1:
        raise ReportError(f"{where}.rate: must be 0..1")


def _check_pipeline(path: str, r: dict[str, Any]) -> None:
    for k in LATENCY_KEYS:
        _check_latency(f"{path}{k}", r.get(k))
    hops = r.get("hops_ms")
    if not isinstance(hops, dict):
        raise ReportError(f"{path}hops_ms: must be an object")
    for name, v in hops.items():
        _check_latency(f"{path}hops_ms.{name}", v)
    fbr = r.get("false_bargein_rate")
    if not isinstance(fbr, int | float) or not 0 <= fbr <= 1:
        raise ReportError(f"{path}false_bargein_rate: must be 0..1")
    bpr = r.get("bargein_pause_rate", 0.0)       # optional: pause-then-decide hesitations
    if not isinstance(bpr, int | float) or not 0 <= bpr <= 1:
        raise ReportError(f"{path}bargein_pause_rate: must be 0..1")
    fb = r.get("false_bargein")
    if not isinstance(fb, dict) or set(fb) != set(FALSE_BARGEIN_KINDS):
        raise ReportError(f"{path}false_bargein: must be an object with "
                          f"{', '.join(FALSE_BARGEIN_KINDS)}")
    for kind, v in fb.items():
        _check_count(f"{path}false_bargein.{kind}", v)
    counts = [("premature_replies", r["premature_replies"])] if "premature_replies" in r else []
    counts += [(f"premature_by_kind.{k}", v) for k, v in (r.get("premature_by_kind") or {}
                                                          ).items()]
    for name, v in counts:
        _check_count(f"{path}{name}", v)
    if "premature_into_pause_ms" in r:
        _check_latency(f"{path}premature_into_pause_ms", r["premature_into_pause_ms"])
    if r.get("wer") is not None and not isinstance(r["wer"], int | float):
        raise ReportError(f"{path}wer: must be a number or null")
    if not isinstance(r.get("cpu_s_per_call_min"), int | float):
        raise ReportError(f"{path}cpu_s_per_call_min: must be a number")


def validate(report: dict[str, Any]) -> None:
    """Raise ReportError unless ``report`` follows the schema in this module's docstring."""
    for k in TOP_KEYS:
        if k not in report:
            raise ReportError(f"{k}: missing")
    _check_pipeline("", report)
    if not isinstance(report["baseline"], dict):
        raise ReportError("baseline: must be an object")
    _check_pipeline("baseline.", report["baseline"])
    for k in ("config", "machine"):
        if not isinstance(report[k], dict):
            raise ReportError(f"{k}: must be an object")


def summary_text(report: dict[str, Any]) -> str:
    """A one-screen text summary of a validated report."""

    def lat(v: dict[str, Any]) -> str:
        if not v["n"]:
            return "n=0"
        return f"p50 {v['p50']:.0f} ms  p95 {v['p95']:.0f} ms  p99 {v['p99']:.0f} ms  n={v['n']}"

    b = report["baseline"]
    lines = [
        f"callctl bench — {report['config'].get('calls', '?')} call(s), "
        f"asr={report['config'].get('asr')}, playback={report['config'].get('playback')}, "
        f"switch={report['config'].get('switch', 'sim')}, "
        f"script={report['config'].get('script', 'standard')}",
        f"  turn latency     {lat(report['turn_latency_ms'])}",
        f"  baseline         {lat(b['turn_latency_ms'])}",
    ]
    ratio = report.get("ratio") or {}
    if ratio.get("p50") is not None:
        lines.append(f"  callctl/baseline p50 {ratio['p50']:.2f}  p95 {ratio.get('p95') or 0:.2f}")
    for hop, v in report["hops_ms"].items():
        lines.append(f"    {hop:<16} {lat(v)}")
    lines += [
        f"  barge-in         {lat(report['bargein_ms'])}",
        f"  false barge-ins  {report['false_bargein_rate'] * 100:.1f} %  ("
        + ", ".join(f"{k} {v['hits']}/{v['n']}"
                    for k, v in report["false_bargein"].items()) + ")",
        f"  missed turns     {report.get('missed_turns', 0)}",
        *([f"  premature        {pr['hits']} of {pr['n']} utterances heard the bot start "
           "inside them (" + ", ".join(f"{k} {v['hits']}/{v['n']}" for k, v in
                                        report.get("premature_by_kind", {}).items()) + ")"]
          if (pr := report.get("premature_replies")) else []),
        f"  WER              {report['wer'] if report['wer'] is not None else 'n/a'}",
        f"  CPU              {report['cpu_s_per_call_min']:.2f} s per call-minute"
        + (f" (baseline {b['cpu_s_per_call_min']:.2f})" if b.get("ran", True) else ""),
    ]
    if "answer_to_first_audio_ms" in report:
        lines.append(f"  answer→audio     {lat(report['answer_to_first_audio_ms'])}")
    if report.get("peak_rss_mb"):
        lines.append(f"  daemon peak RSS  {report['peak_rss_mb']:.0f} MB")
    for row in report.get("sweep") or []:
        lines.append(f"  sweep {row['calls']:>3} calls: {lat(row['turn_latency_ms'])}")
    if report.get("sweep"):
        lines.append(f"  highest concurrency with p95 within budget: "
                     f"{report.get('sweep_max_calls_within_budget') or 'none'}")
    return "\n".join(lines)
