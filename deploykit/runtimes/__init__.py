"""Runtimes: load an artifact and run it on this machine. Each backend imports lazily."""
