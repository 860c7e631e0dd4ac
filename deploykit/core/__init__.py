"""Light-weight foundations: errors, registries, manifests, comparisons. No torch imports here."""
