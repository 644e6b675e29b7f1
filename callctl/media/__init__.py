"""Caller media: mod_audio_fork WebSocket server, per-call audio inbox, VAD, listener."""
