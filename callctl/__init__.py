"""callctl: an on-prem voice-agent call-control daemon for FreeSWITCH."""

__version__ = "0.1.0"
