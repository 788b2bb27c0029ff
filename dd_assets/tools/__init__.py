"""Commands over a code location: the ``dd-assets`` CLI and the estimate."""
