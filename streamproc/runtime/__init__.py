"""streamproc.runtime."""
