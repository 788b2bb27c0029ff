"""Example workflows shipped with dd_assets: ``quickstart`` (offline) and ``doc_qa`` (needs an LLM endpoint)."""
