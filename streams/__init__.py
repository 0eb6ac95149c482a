"""The streaming layer: topics, the Faust processors, settings, the local stack and the CLI."""
