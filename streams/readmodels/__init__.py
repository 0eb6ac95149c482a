"""Read models: views of the pipeline built from its topics (the agent registry, task results)."""
