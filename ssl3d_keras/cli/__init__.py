"""The `ssl3d` command line: a thin click layer over the library."""
