"""One module per CLI subcommand; each defines ``register(subparsers)`` and imports heavy
dependencies lazily inside its ``run(args)``."""
