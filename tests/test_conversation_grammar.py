"""A flow node's expected phrases restrict the recognizer (Vosk runtime grammar) for the next
turn, end to end with the real Korean model: the node's phrases in the dialog's ``listen``
reach the call's recognizer, and the recognizer can only answer with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gevent
import pytest
from conversation_rig import Rig, write_flow
from flow_rig import ask, flow_table, flow_toml, goto_on, then_hang_up

from callctl.asr.vosk import VoskRecognizer
from callctl.conversation import Conversation
from callctl.sim import callers

YES_NO = flow_toml(flow_table("ask", {
    "ask": ask("Say yes or no.", {"yes": goto_on(["네"], "yes"), "no": goto_on(["아니요"], "no")},
               reprompt="Yes or no?"),
    "yes": then_hang_up("Yes noted."),
    "no": then_hang_up("No noted."),
    "lost": then_hang_up("Not understood."),
}, retries=0, on_fail="lost"))


@pytest.mark.slow
def test_node_phrases_restrict_the_recognizer(tmp_path: Path, redis_url: str,
                                              vosk_engine: Any) -> None:
    flows = write_flow(tmp_path / "flows", "yes_no", YES_NO)
    rig = Rig(tmp_path, redis_url, vosk_engine, flow="yes_no", flows_dir=flows)
    grammars: list[Any] = []
    try:
        call, _ = rig.call([callers.wait_for_bot(silence_s=0.4),
                            callers.say("I need to book an appointment for next Tuesday.",
                                        voice="piper"),
                            callers.wait_for_bot(silence_s=0.4), callers.pause(1.0)])
        with gevent.Timeout(15):      # in effect from the caller's first words on
            while not grammars:
                for session in rig.daemon.registry:
                    conv = session.conversation
                    rec = conv.recognizer if isinstance(conv, Conversation) else None
                    if isinstance(rec, VoskRecognizer) and rec.grammar is not None:
                        grammars.append(rec.grammar)
                gevent.sleep(0.02)
        rig.finish(call)
    finally:
        rig.close()
    assert grammars[0] == ("네", "아니요")
    # English speech, but the recognizer could only say one of the node's phrases (or
    # nothing): the flow went to yes/no, or (nothing recognized) to its on_fail node
    assert rig.said[0] == "Say yes or no."
    assert rig.said[1] in ("Yes noted.", "No noted.", "Not understood."), rig.said
    assert rig.said[1] != "Not understood.", "grammar-restricted decoding matched nothing"


def test_korean_phrases_survive_normalization(tmp_path: Path) -> None:
    from callctl import config
    from callctl.dialog import CallContext, Dialogs, Speech

    flows = write_flow(tmp_path / "flows", "yes_no", YES_NO)
    cfg = config.Config(dialog=config.DialogConfig(flows_dir=str(flows)),
                        routes=(config.RouteConfig(did="1", flow="yes_no"),))
    engine = Dialogs(cfg).engine("yes_no", CallContext("c"))
    engine.open()
    assert engine.listen is not None and engine.listen.grammar == ("네", "아니요")
    assert engine.respond(Speech("아니요")).sentences == ["No noted."]
