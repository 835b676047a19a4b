"""One module per `tunelab` subcommand: HELP, add_arguments(parser), run(args) -> int."""
