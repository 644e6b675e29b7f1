"""Per-call ownership: the state machine, the call's timeline and the CallSession greenlet."""
