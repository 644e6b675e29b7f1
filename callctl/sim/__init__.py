"""FreeSWITCH emulator: a test kit shipped inside the package (ESL, channels, mod_audio_fork,
scripted callers). Used by the tests, `callctl demo`, `callctl bench` and `callctl sim serve`."""
