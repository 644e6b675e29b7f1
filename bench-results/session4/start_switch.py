"""Start a FreeSWITCH on callctl's own freeswitch/conf (tests/fskit.py), print the
`callctl bench --switch freeswitch` options that reach it, and keep it up until Ctrl-C / SIGTERM.

    .venv/bin/python bench-results/session4/start_switch.py /tmp/fs-bench 18040
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from fskit import PASSWORD, FreeSwitch  # noqa: E402


def main() -> None:
    work, daemon_port = Path(sys.argv[1]), int(sys.argv[2])
    fs = FreeSwitch(work, daemon_port)
    fs.start()
    print(f"--switch freeswitch --sip 127.0.0.1:{fs.sip_port} --esl-port {fs.esl_port} "
          f"--esl-password {PASSWORD} --daemon-esl-port {daemon_port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        fs.stop()


if __name__ == "__main__":
    main()
