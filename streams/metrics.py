"""Prometheus metrics of the streaming processors (one registry per process, served on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS = Counter(
    "aios_events_processed_total", "Events handled by a processor, by outcome.", ["processor", "outcome"]
)
PROCESSING = Histogram(
    "aios_processing_seconds",
    "Time a processor spent on one event (a batch for the history sink).",
    ["processor"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DEAD_LETTERS = Counter("aios_dead_letters_total", "Records sent to the DLQ.", ["processor", "source_topic"])
RECORD_FAILURES = Counter(
    "aios_record_failures_total",
    "Records a processor failed on, by what was decided (dead_letter: the record's fault; retry: a server "
    "was down, the record is tried again; fatal: the process restarts) and the error's type.",
    ["processor", "verdict", "error_type"],
)
TXN_RETRIES = Counter(
    "aios_transaction_retries_total",
    "Transaction steps (send offsets, commit, abort) a transactional processor repeated after a retriable "
    "error, such as a coordinator that timed out while a broker was lost; 'new producer': a producer replaced "
    "after a fatal error or a first fence.", ["processor", "step"],
)
LLM_TOKENS = Counter("aios_llm_tokens_total", "LLM tokens used.", ["provider", "model", "direction"])
LLM_COST = Counter("aios_llm_cost_usd_total", "LLM spend in USD.", ["provider", "model"])
# OpenTelemetry's GenAI client metrics, under the names Prometheus translates them to
# (gen_ai.client.token.usage {token} -> gen_ai_client_token_usage; gen_ai.client.operation.duration s
# -> ..._seconds), with the conventions' attributes as labels and its advised buckets.
GENAI_LABELS = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
GENAI_TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage", "Tokens used per GenAI call (OpenTelemetry gen_ai.client.token.usage).",
    [*GENAI_LABELS, "gen_ai_token_type"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)
GENAI_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "Duration of a GenAI call (OpenTelemetry gen_ai.client.operation.duration).", GENAI_LABELS,
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
)


def observe_genai_call(provider: str, model: str, input_tokens: int, output_tokens: int, seconds: float) -> None:
    """One LLM call that was paid for, in the GenAI client metrics."""
    GENAI_TOKEN_USAGE.labels("chat", provider, model, "input").observe(input_tokens)
    GENAI_TOKEN_USAGE.labels("chat", provider, model, "output").observe(output_tokens)
    GENAI_DURATION.labels("chat", provider, model).observe(seconds)


SINK_ROWS = Counter("aios_sink_rows_total", "Rows the history sink stored.", ["engine"])
SINK_BATCH = Histogram(
    "aios_sink_batch_rows", "Rows per history-sink batch.",
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000, 100000)
)
ROUTER_DECISIONS = Counter(
    "aios_router_decisions_total", "LLM calls the router sent to a deployment.", ["strategy", "deployment"]
)
ROUTER_COOLDOWNS = Counter(
    "aios_router_cooldowns_total", "Deployments put in cooldown after a failure.", ["deployment", "reason"]
)
ROUTER_QUEUE = Histogram(
    "aios_router_queue_seconds",
    "Time an LLM call waited for a deployment to have room (its concurrency, rpm and tpm limits, a 429's "
    "retry-after) before it started.",
    ["deployment"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ROUTER_IN_FLIGHT = Gauge("aios_router_in_flight", "LLM calls a deployment is answering.", ["deployment"])
ROUTER_WAITING = Gauge("aios_router_waiting",
                       "LLM calls waiting for room, counted at every deployment they may start on.", ["deployment"])
AGENT_STATUS = Counter("aios_agent_status_total", "AgentStatus events published, by state.", ["state"])
LLM_REPLAYS = Counter("aios_llm_replays_total", "LLM answers reused from the journal instead of calling again.")
SINK_RETRIES = Counter("aios_sink_store_retries_total", "History-store writes retried after an outage.")
SINK_REFUSED = Counter("aios_sink_native_refused_total",
                       "History-sink batches whose Native blocks ClickHouse refused, decoded in Python instead.")
SINK_PYTHON = Counter("aios_sink_python_decoded_total",
                      "History-sink events decoded in Python instead of transcoded (the rejected ones included).")
SINK_FLUSH = Histogram(
    "aios_sink_flush_seconds",
    "Time to store one history-sink batch, retries during an outage included.",
    ["engine"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
TASKS = Counter("aios_tasks_processed_total", "Task attempts an agent worker finished, by role and outcome.",
                ["role", "outcome"])
TASK_SECONDS = Histogram(
    "aios_task_duration_seconds",
    "Wall time of one task attempt in an agent worker (context, recall, LLM, outputs).",
    ["role"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
CONCURRENT_IN_FLIGHT = Gauge("aios_in_flight_records", "Records a concurrent processor (the agent worker) has in "
                             "flight: started, not yet finished and acknowledged.", ["processor"])
CONCURRENT_PAUSES = Counter("aios_fetch_paused_total", "Times a concurrent processor paused fetching because its "
                            "window (AIOS_AGENT_MAX_IN_FLIGHT) was full.", ["processor"])
CONCURRENT_RETRIES = Counter("aios_record_retries_total", "Records run again after a failure that was not theirs "
                             "(a store outage, an undelivered output), by cause.", ["processor", "cause"])
CANCELLED_WORK = Counter("aios_cancelled_attempts_total", "Attempts an agent worker stopped because a cancel (or a "
                         "spent budget) reached it, by when: before starting or while running.", ["when"])
CANCEL_SECONDS = Histogram("aios_cancel_seconds", "From a cancel's timestamp to the running attempt's stop.",
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
TOKEN_EVENTS = Counter("aios_token_events_total", "Live-token events published (coalesced deltas).")
ASK_QUESTIONS = Counter(
    "aios_ask_questions_total", "ask_agent questions by the role asked and what came of them: asked, resumed (a "
    "redelivered asker waits for its journaled question), replayed (the answer read from the journal), answered, "
    "failed, refused_depth, refused_role, timeout.", ["role", "outcome"])
ASK_WAITING = Gauge("aios_ask_waiting", "ask_agent questions waiting for their answer in this worker.")
CONTROL_BROADCASTS = Counter(
    "aios_control_broadcasts_total", "Drain and reload broadcasts this worker acted on, by what came of them "
    "(done, failed, ignored: meant for another worker).", ["action", "outcome"])
LAG_ERRORS = Counter("aios_consumer_lag_errors_total", "Consumer-lag reads the broker did not answer in time.")
KAFKA_ACCESS_FAILURES = Counter(
    "aios_kafka_access_failures_total",
    "Times Kafka refused this process or did not answer it (a start-up check, an ACL refusal), by reason: "
    "sasl, tls-untrusted, tls-client-cert, tls-handshake, tls-files, authorization, unreachable.", ["reason"])
SEALED = Counter("aios_sealed_fields_total", "Restricted fields sealed, opened, or found unreadable (no key).",
                 ["operation"])
RESTRICTED_KEPT_LOCAL = Counter(
    "aios_restricted_kept_local_total",
    "Times restricted content was kept from a remote model or embedder: left out of a prompt, recall or index, "
    "or summarised locally.", ["processor", "what"])



MCP_CALLS = Counter("aios_mcp_calls_total", "MCP tool calls made, by server and outcome (ok or the error's "
                    "class: McpTimeoutError, McpToolError, McpResultTooLargeError, McpUnavailableError).",
                    ["server", "outcome"])
MCP_CALL_SECONDS = Histogram("aios_mcp_call_seconds", "How long an MCP tool call took, by server.", ["server"],
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
MCP_SERVER_TOOLS = Gauge("aios_mcp_server_tools", "Tools an MCP server offers this worker, as fetched at start; "
                         "-1 when it could not be reached.", ["server"])
TOOL_REPLAYS = Counter("aios_tool_replays_total", "Tool results (MCP calls included) reused from the journal "
                       "instead of calling the tool again.")


class McpMetrics:
    """The MCP toolset's observer (agents/mcp/tools.py): calls and servers in Prometheus."""

    def call(self, server: str, outcome: str, seconds: float) -> None:
        MCP_CALLS.labels(server, outcome).inc()
        MCP_CALL_SECONDS.labels(server).observe(seconds)

    def server(self, server: str, tools: int) -> None:
        MCP_SERVER_TOOLS.labels(server).set(tools)


class RouterMetrics:
    """The router's observer: its decisions, cooldowns, waits and load in Prometheus."""

    def decision(self, strategy: str, deployment: str) -> None:
        ROUTER_DECISIONS.labels(strategy, deployment).inc()

    def cooldown(self, deployment: str, reason: str) -> None:
        ROUTER_COOLDOWNS.labels(deployment, reason).inc()

    def queued(self, deployment: str, seconds: float) -> None:
        ROUTER_QUEUE.labels(deployment).observe(seconds)

    def load(self, deployment: str, in_flight: int, waiting: int) -> None:
        ROUTER_IN_FLIGHT.labels(deployment).set(in_flight)
        ROUTER_WAITING.labels(deployment).set(waiting)


_served: set[int] = set()


def serve(port: int, host: str = "127.0.0.1") -> bool:
    """Serve /metrics once per process and port; port 0 disables it."""
    if port == 0 or port in _served:
        return False
    start_http_server(port, addr=host)
    _served.add(port)
    return True

ROLE_LIVE_AGENTS = Gauge("aios_role_live_agents", "Live agent workers serving a role (from aios.agents).", ["role"])
ROLE_IN_FLIGHT = Gauge("aios_role_in_flight_tasks", "Tasks in flight at a role's live agents (from aios.agents).",
                       ["role"])
DLQ_REPLAYS = Counter("aios_dlq_replays_total", "Dead letters sent back to a topic (`replayed`), refused past "
                      "AIOS_DLQ_REPLAY_LIMIT or for a cut payload (`refused`), or only shown (`dry_run`).",
                      ["outcome"])

# `aios up`'s supervisor (aios/devstack/supervisor.py); its /metrics also carries each process's
# own metrics, labelled with the process they came from.
PROCESS_RESTARTS = Counter("aios_process_restarts_total",
                           "Processes `aios up` restarted after they exited without being asked to.", ["process"])
PROCESS_UP = Gauge("aios_process_up", "1 while a process `aios up` supervises runs, else 0.", ["process"])
METRICS_SCRAPE_FAILURES = Counter("aios_metrics_scrape_failures_total",
                                  "Scrapes of a supervised process's /metrics that got no answer (left out).",
                                  ["process"])
A2A_REMOTE_CALLS = Counter("aios_a2a_remote_calls_total",
                           "Calls agents made to remote A2A agents as tools (journal replays are not calls), by "
                           "agent and outcome: ok, failed (the remote task failed), error, timeout.",
                           ["agent", "outcome"])
A2A_REMOTE_SECONDS = Histogram("aios_a2a_remote_call_seconds", "Time a call to a remote A2A agent took.", ["agent"],
                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))

ARTIFACTS = Counter("aios_artifacts_total", "Artifacts agents wrote to the artifact store, by outcome (written, failed).",
                    ["outcome"])
ARTIFACT_BYTES = Counter("aios_artifact_bytes_total", "Bytes of artifacts written to the artifact store.")
OUTPUTS_OFFLOADED = Counter(
    "aios_outputs_offloaded_total",
    "Agent outputs over AIOS_OUTPUT_INLINE_BYTES kept whole in the artifact store (the event carries an excerpt).")
