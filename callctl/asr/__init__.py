"""Speech recognition: the recognizer interface and its engines (vosk, whisper)."""
