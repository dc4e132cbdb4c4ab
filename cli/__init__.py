"""The `csm` command-line interface: the operators' entry point."""
