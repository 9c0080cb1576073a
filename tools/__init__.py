"""The tools on top of the library: the command line, the demo, the batch runner and
the status view."""
