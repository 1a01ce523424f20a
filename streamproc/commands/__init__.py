"""One module per CLI group; see streamproc.cli."""
