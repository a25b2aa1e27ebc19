"""One module per CLI subcommand; each defines ``HELP`` (one line for ``xmodal --help``),
``DESCRIPTION``, optionally ``PARSER`` (more ``add_parser`` options), ``add_arguments(parser)``
and ``run(args)``, which imports heavy dependencies lazily."""
