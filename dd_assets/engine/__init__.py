"""Every touch of Data Designer's internals, behind the version check: shared registry, resource, guard, costs."""
