"""Export adapters, one per target; each imports its backend lazily."""
