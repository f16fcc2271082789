"""One module per graph node; each exposes an async ``run(state, runtime)``."""
