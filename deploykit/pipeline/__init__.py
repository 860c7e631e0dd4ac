"""End-to-end workflows composed from zoo, passes, export and runtimes (the layer under the CLI)."""
