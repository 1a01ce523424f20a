"""streamproc.training."""
