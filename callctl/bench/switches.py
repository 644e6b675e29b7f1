"""The switch a bench run drives: the emulator (``--switch sim``) or an existing FreeSWITCH
(``--switch freeswitch``). The runner places the same scripted callers through either and
measures them the same way, on the caller's side.

How this works: ``EmulatedSwitch`` runs ``callctl.sim`` in the bench process; its dialplan
points the bench DID at whichever daemon process is measured (``route``), and each call's
uuid is known when it is placed. ``RealSwitch`` drives a FreeSWITCH the bench does not own:
its dialplan hands ``did`` to the daemon's outbound ESL port (``daemon_esl_port``, so the
bench's daemon child must listen there and only one daemon can be measured at a time), the
callers are ``callctl.sim.phone`` SIP/RTP phones sending INVITEs to the ``sip`` profile, and
the daemon reaches the switch's inbound Event Socket for its control link. A phone does not
know the switch's channel uuid; each call gets a caller number unique to this bench run and
phase (``number``), and the daemon child reports which uuid served which caller number (the
``Caller-Caller-ID-Number`` of its outbound socket), so the turn records are fetched by that.
``check`` fails early with a one-line reason when the Event Socket is not reachable or
refuses the password.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import gevent.socket

from callctl.sim.callers import Caller
from callctl.sim.interfaces import Heard
from callctl.sim.phone import Phone
from callctl.sim.switch import Switch, SwitchConfig

SIM_DID = "+15559990000"
FREESWITCH_DID = "+15551230000"       # routed to callctl by the shipped freeswitch/conf


class BenchCall(Protocol):
    """What the runner needs of a placed call (``SimCall`` or ``PhoneCall``)."""

    @property
    def uuid(self) -> str | None: ...
    @property
    def hangup_cause(self) -> str | None: ...
    def hangup(self, cause: str = "NORMAL_CLEARING") -> None: ...
    def heard(self) -> list[Heard]: ...


class DaemonLike(Protocol):
    @property
    def esl_port(self) -> int: ...


class EmulatedSwitch:
    """``callctl.sim`` in this process (module doc)."""

    name = "sim"
    sequential = False          # each pipeline's daemon has its own port: load them at once

    def __init__(self, speed: float = 1.0) -> None:
        self.did = SIM_DID
        self.dialplan: dict[str, str] = {}
        self.sw = Switch(SwitchConfig(esl_port=0, dialplan=self.dialplan, speed=speed))

    def start(self) -> None:
        self.sw.start()

    def check(self) -> None:
        return None

    def stop(self) -> None:
        self.sw.stop()

    def daemon_esl(self) -> dict[str, Any]:
        """The daemon's ESL settings: the emulator's control port, an ephemeral listener."""
        return {"host": "127.0.0.1", "port": self.sw.esl_port, "password": "ClueCon",
                "listen_port": 0}

    def route(self, proc: DaemonLike) -> None:
        self.dialplan[self.did] = f"socket 127.0.0.1:{proc.esl_port} async full"

    def number(self, phase: int, index: int) -> str:
        return f"+1555800{index:04d}"

    def place(self, number: str, caller: Caller) -> BenchCall:
        return self.sw.place_call(self.did, number, "PCMU", script=caller)


@dataclass(frozen=True)
class RealSwitchConfig:
    sip_host: str
    sip_port: int
    did: str = FREESWITCH_DID
    esl_host: str = "127.0.0.1"
    esl_port: int = 8021
    esl_password: str = "ClueCon"
    daemon_esl_port: int = 8040      # where the switch's dialplan `socket` connects


class RealSwitch:
    """An existing FreeSWITCH reached over SIP and ESL (module doc)."""

    name = "freeswitch"
    sequential = True           # one daemon port in the switch's dialplan: one at a time

    def __init__(self, cfg: RealSwitchConfig) -> None:
        self.cfg = cfg
        self.did = cfg.did
        self.phone = Phone(cfg.sip_host, cfg.sip_port)
        self.tag = os.getpid() % 1000          # caller numbers unique to this run

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def check(self, timeout_s: float = 5.0) -> None:
        """RuntimeError (one line) unless the Event Socket accepts the password."""
        where = f"{self.cfg.esl_host}:{self.cfg.esl_port}"
        try:
            with gevent.socket.create_connection((self.cfg.esl_host, self.cfg.esl_port),
                                          timeout=timeout_s) as s:
                s.settimeout(timeout_s)
                greeting = _read_headers(s)
                if b"auth/request" not in greeting:
                    raise RuntimeError(f"{where} is not a FreeSWITCH Event Socket")
                s.sendall(f"auth {self.cfg.esl_password}\n\n".encode())
                reply = _read_headers(s)
        except OSError as e:
            raise RuntimeError(f"FreeSWITCH Event Socket {where}: {e}") from None
        if b"+OK" not in reply:
            raise RuntimeError(f"FreeSWITCH Event Socket {where} refused the password "
                               "(--esl-password)")

    def daemon_esl(self) -> dict[str, Any]:
        return {"host": self.cfg.esl_host, "port": self.cfg.esl_port,
                "password": self.cfg.esl_password, "listen_port": self.cfg.daemon_esl_port}

    def route(self, proc: DaemonLike) -> None:
        if proc.esl_port != self.cfg.daemon_esl_port:
            raise RuntimeError(f"the daemon listens on {proc.esl_port}, the switch's dialplan "
                               f"connects to {self.cfg.daemon_esl_port}")

    def number(self, phase: int, index: int) -> str:
        return f"+1556{self.tag:03d}{phase % 100:02d}{index % 1000:03d}"

    def place(self, number: str, caller: Caller) -> BenchCall:
        call = self.phone.call(self.did, number)
        gevent.spawn(caller.run, call)
        return call


def _read_headers(s: Any, limit: int = 65536) -> bytes:
    buf = b""
    while b"\n\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            break
    return buf


Bench = EmulatedSwitch | RealSwitch
