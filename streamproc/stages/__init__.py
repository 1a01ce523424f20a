"""streamproc.stages."""
