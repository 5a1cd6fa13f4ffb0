"""Identity's pure core: SVID and bundle types and validation, certificate building; no I/O."""
