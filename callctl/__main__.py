"""Entry point: gevent monkey-patches the process before anything else is imported.

The process ends with ``os._exit`` once the command has returned (its own shutdown done:
calls drained, store flushed, sockets closed, output flushed here): native libraries that
keep threads of their own (CTranslate2 under faster-whisper, ONNX Runtime, Kaldi) can crash
while the interpreter finalizes their objects, and a command that did its work must not end
with SIGSEGV (systemd would mark the unit failed; a script would see a failure).
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    """Run the `callctl` command line; exits with its status."""
    from callctl.cli import cli_main, exit_status

    try:
        code = exit_status(cli_main(sys.argv[1:]))
    except SystemExit as e:              # argparse errors, --help, --version
        code = exit_status(e.code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):    # closed or broken pipe: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
