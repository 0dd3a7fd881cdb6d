"""The model artefact: PMML checks."""
