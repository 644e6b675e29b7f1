"""FreeSWITCH Event Socket: greenswitch with its gaps fixed (``adapter``), the outbound server
that takes every call (``outbound``) and the inbound control connection (``control``)."""
