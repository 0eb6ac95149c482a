"""Orchestration logic: plans, validation and DAG scheduling, free of Kafka so it can be proved."""
