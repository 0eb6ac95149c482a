"""Wire-format LLM servers: real HTTP servers speaking the OpenAI and Anthropic APIs, for tests,
benches and a demo mode (shipped like pydantic-ai's TestModel, so nothing imports the test tree)."""
