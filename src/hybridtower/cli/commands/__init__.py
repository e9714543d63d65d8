"""Subcommand modules. Each defines ``register(subparsers)`` which adds its parser and sets ``func``."""
