"""What users declare: stages, workflows, their YAML, validation, column flow and versions (no storage, no runs)."""
