"""What an agent is: its task logic and the LLM provider layer. Knows nothing of Kafka."""
