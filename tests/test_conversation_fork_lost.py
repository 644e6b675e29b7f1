"""A call whose mod_audio_fork goes away: the daemon starts the fork again and the caller is
heard; if it cannot be brought back, the call is released to the dialplan (whose fallback
takes it) instead of staying up deaf. Emulator over real sockets, real Whisper, real Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gevent
import pytest
from conversation_rig import DID, Rig

from callctl import config
from callctl.sim import callers
from callctl.sim.switch import SimCall


def rig_for(tmp_path: Path, redis_url: str, asr: Any) -> Rig:
    return Rig(tmp_path, redis_url, asr,
               media=config.MediaConfig(listen_port=0, no_audio_timeout_s=1.0))


def kill_fork_after_greeting(call: SimCall) -> None:
    """The switch side drops the fork (as a module or network failure would)."""
    with gevent.Timeout(10):
        while not call.heard():
            gevent.sleep(0.05)
    assert call.media.fork_api(["stop", "callctl"]).startswith("+OK")


@pytest.mark.slow
def test_a_lost_fork_is_started_again_and_the_caller_is_heard(
        tmp_path: Path, redis_url: str, whisper_engine: Any) -> None:
    rig = rig_for(tmp_path, redis_url, whisper_engine)
    try:
        call, _ = rig.call([callers.wait_for_bot(silence_s=0.6), callers.pause(3.0),
                            callers.say("Billing, please.", voice="piper"),
                            callers.wait_for_bot(silence_s=0.6), callers.pause(1.0)])
        kill_fork_after_greeting(call)
        rig.finish(call)
        assert rig.transfers(call.uuid) == ["7001"]          # heard after the restart
    finally:
        rig.close()


@pytest.mark.slow
def test_a_fork_that_cannot_come_back_releases_the_call_to_the_dialplan(
        tmp_path: Path, redis_url: str, whisper_engine: Any) -> None:
    rig = rig_for(tmp_path, redis_url, whisper_engine)
    try:
        # the dialplan's fallback after the socket app: park (a hold queue, say)
        rig.dialplan[DID] = f"socket 127.0.0.1:{rig.daemon.server.port} async full;park"
        call, _ = rig.call([callers.wait_for_bot(silence_s=0.6), callers.pause(10.0)])
        with gevent.Timeout(10):
            while not call.heard():
                gevent.sleep(0.05)
        rig.voice.forks.unregister(call.uuid)               # every reconnect now gets 404
        assert call.media.fork_api(["stop", "callctl"]).startswith("+OK")
        t0 = time.monotonic()
        with gevent.Timeout(15):
            while len(rig.daemon.registry):
                gevent.sleep(0.05)
        # two restarts, each given media.no_audio_timeout_s, then released: the call is up
        assert time.monotonic() - t0 >= 2.0
        assert call.hangup_cause is None                      # not hung up: parked
        ended = {tuple(sorted(s.labels.items())): s.value
                 for m in rig.metrics.registry.collect() if m.name == "callctl_calls"
                 for s in m.samples if s.name == "callctl_calls_total"}
        assert [dict(k)["outcome"] for k, v in ended.items() if v] == ["released"], ended
        call.hangup()
        assert call.wait_hangup(5)
    finally:
        rig.close()
