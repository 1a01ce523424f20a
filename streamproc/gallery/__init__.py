"""streamproc.gallery."""
