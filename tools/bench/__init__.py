"""The benchmarks of ``tools/benchmark.py``: one module per subcommand, each with
``add_arguments(parser)`` and ``run(args)``; ``common`` holds what they share."""
