"""The applications built on the library: experiment configs, the command line, the demo and the
benchmark. Nothing in the library imports this package."""
