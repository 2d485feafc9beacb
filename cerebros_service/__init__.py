"""cerebros-service: Cerebros-style neural architecture search for Elixir and Python callers."""

__version__ = "0.1.0"
