"""Entry point: gevent monkey-patches the process before anything else is imported."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402


def main() -> None:
    """Run the `callctl` command line; exits with its status."""
    from callctl.cli import cli_main

    sys.exit(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
