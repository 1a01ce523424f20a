"""streamproc.models."""
