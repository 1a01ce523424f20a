"""streamproc.eval."""
