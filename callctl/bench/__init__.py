"""`callctl bench`: turn latency, barge-in and accuracy measured from the caller's side of the
emulated switch, for callctl and for a cloud-style baseline in the same run."""
