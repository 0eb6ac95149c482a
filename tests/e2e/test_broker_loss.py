"""Losing a broker of a 3-broker KRaft cluster under load (issue 20, section 1).

A cluster of three brokers, each also a voter of the controller quorum, runs on loopback (the dev
stack's own code, tests/integration/kafka_brokers.py). The topics get 3 copies and
min.insync.replicas 2 because the cluster has three brokers. ``aios worker orchestrator``,
``aios worker results`` and ``aios worker agents`` run as their own processes while tasks are
produced at a steady rate. The broker that leads the most partitions (and, in
test_controller_loss.py, the active controller: a file of its own, so the two run side by side under
pytest-xdist's --dist loadfile) is SIGKILLed, and restarted after a while. Every task the producer saw
acknowledged must end with exactly one committed result, no processor may die, and the time from
the kill to the first result after it is reported.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import OffsetSpec

from aios.streams.kafka import TopicReader
from aios.streams.readmodels.top import group_lag
from aios.streams.settings import Settings, load_settings
from tests.e2e.conftest import Cli
from tests.e2e.load import ResultWatch, SteadyLoad, TaskKey, longest_gap
from tests.e2e.test_crash_safety import Worker
from tests.integration.kafka_brokers import LocalCluster, listed_topics

pytestmark = pytest.mark.integration

RATE = 5.0  # tasks a second
BEFORE_S, DOWN_S, AFTER_S = 15.0, 25.0, 15.0  # load before the kill, while the broker is down, after it is back
SETTLE_S = 240.0  # how long every acknowledged task may take to get its result at the end


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        local.start()
        yield local
    finally:
        local.stop()  # every broker, even when the test failed


def _settings(cluster: LocalCluster, data_dir: Path) -> Settings:
    return load_settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=f"loss{uuid.uuid4().hex[:8]}",
                         data_dir=data_dir, metrics_port=0, llm="offline:echo")


def _cli(settings: Settings) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "OPENAI_"))}
    env.update({"AIOS_TOPIC_PREFIX": settings.kafka.topic_prefix, "AIOS_DATA_DIR": str(settings.stores.data_dir),
                "AIOS_KAFKA_BOOTSTRAP": settings.kafka.bootstrap, "AIOS_REDIS_URL": settings.stores.redis_url,
                "AIOS_METRICS_PORT": "0", "AIOS_LLM": "offline:echo"})
    return Cli(env)


def _committed_results(settings: Settings) -> Counter[TaskKey]:
    """Every result on aios.results as a read_committed reader sees it, counted per task."""
    reader = TopicReader(settings, f"{settings.kafka.topic_prefix}.results", from_beginning=True)
    try:
        return Counter((d.value["project_id"], d.value["task_id"]) for _, d in reader.events(timeout_s=5)
                       if not isinstance(d, Exception))
    finally:
        reader.close()


def _lag(cluster: LocalCluster, settings: Settings) -> dict[str, int] | str:
    try:
        return group_lag(cluster.admin(), f"{settings.kafka.topic_prefix}-", timeout_s=10)
    except Exception as exc:  # a diagnostic: its own failure must not hide the test's
        return f"could not read the lag: {exc}"


def _behind(cluster: LocalCluster, group: str) -> dict[str, tuple[int, int, int]] | str:
    """The group's partitions with records yet to commit: (committed, last stable offset, high watermark).
    A committed offset at a last stable offset below the high watermark is a read_committed reader
    held back by a transaction left open, not a processor that stopped asking."""
    admin = cluster.admin()
    try:
        answer = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10)
        committed = [tp for tp in answer[group].result(timeout=10).topic_partitions if tp.offset >= 0]
        ends = {}
        for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
            futures = admin.list_offsets({TopicPartition(tp.topic, tp.partition): OffsetSpec.latest()  # type: ignore[no-untyped-call]
                                          for tp in committed}, isolation_level=level, request_timeout=10)
            ends[level] = {(tp.topic, tp.partition): f.result(timeout=10).offset for tp, f in futures.items()}
    except Exception as exc:  # a diagnostic: its own failure must not hide the test's
        return f"could not read the offsets: {exc}"
    return {f"{tp.topic}[{tp.partition}]": (tp.offset, ends[IsolationLevel.READ_COMMITTED][(tp.topic, tp.partition)],
                                            ends[IsolationLevel.READ_UNCOMMITTED][(tp.topic, tp.partition)])
            for tp in committed if ends[IsolationLevel.READ_UNCOMMITTED][(tp.topic, tp.partition)] > tp.offset}


def lose_a_broker(cluster: LocalCluster, tmp_path: Path, pick: Callable[[], int], what: str) -> dict[str, object]:
    cluster.wait_fully_replicated()  # the previous test's broker is back in every ISR
    settings = _settings(cluster, tmp_path / "data")
    cli = _cli(settings)
    # The plan follows the cluster, and the command says what it chose.
    created = cli.json("topics", "create")
    assert (created["brokers"], created["replication"], created["min_insync_replicas"]) == (3, 3, 2)
    assert created["replication_from"] == "cluster"
    assert "3 brokers up: new topics get replication factor 3 and min.insync.replicas 2" in " ".join(
        cli.run("topics", "create").stdout.split())
    infos = listed_topics(settings, len(created["topics"]))
    assert len(infos) == len(created["topics"])
    assert {(t.replication, t.min_insync_replicas) for t in infos} == {(3, "2")}

    workers = {name: Worker(cli, name) for name in ("orchestrator", "results", "agents")}
    watch, load = ResultWatch(settings), SteadyLoad(settings, RATE, label=settings.kafka.topic_prefix)
    try:
        for worker in workers.values():
            worker.start()
        watch.start()
        load.start()
        time.sleep(BEFORE_S)
        victim = pick()
        leaders_before = cluster.leaders()
        killed_at = time.monotonic()
        cluster.kill(victim)
        time.sleep(DOWN_S)
        restart_started = time.monotonic()
        cluster.restart(victim)
        rejoined_s = time.monotonic() - restart_started
        time.sleep(AFTER_S)
        load.stop()
        acked = set(load.acked)
        deadline = time.monotonic() + SETTLE_S
        while watch.has(acked) and time.monotonic() < deadline:
            time.sleep(1)
        # Where the pipeline stands when results are still missing: each group's records yet to commit.
        lag_at_end = _lag(cluster, settings) if watch.has(acked) else {}
        stacks = _stacks(workers) if watch.has(acked) else ""
        behind = _behind(cluster, f"{settings.kafka.topic_prefix}-results") if watch.has(acked) else {}
        died = {name: "".join(w.log[-40:]) for name, w in workers.items()
                if w.proc is not None and w.proc.poll() is not None}
        assert not died, f"processors died while a broker was lost: {died}"
    finally:
        for worker in workers.values():
            worker.stop()
        watch.stop()
        if load.is_alive():
            load.stop()

    results = _committed_results(settings)
    missing = acked - set(results)
    repeated = {k: n for k, n in results.items() if n > 1}
    figures: dict[str, object] = {
        "victim": f"broker {victim} ({what})", "leaders_before": dict(sorted(leaders_before.items())),
        "tasks": len(load.sent), "acknowledged": len(acked), "unacknowledged": len(load.failed),
        "results": sum(results.values()), "tasks_with_result": len(results), "duplicates": len(repeated),
        "missing": len(missing),
        "kill_to_first_result_s": _round(watch.first_after(killed_at)),
        "kill_to_first_result_of_a_task_sent_after_it_s": _round(watch.first_after(killed_at,
                                                                                   produced_after=load.sent)),
        "kill_to_first_ack_s": _round(next(iter(load.acked_since(killed_at)), None), killed_at),
        "longest_gap_in_acks_while_down_s": round(
            longest_gap(load.acked_since(killed_at), killed_at, restart_started), 2),
        "longest_gap_in_results_while_down_s": round(watch.longest_gap(killed_at, restart_started), 2),
        "restarted_broker_rejoined_s": round(rejoined_s, 1), "lag_at_end_if_missing": lag_at_end,
        # How the transactional processors rode it out (streams/engine/transactional.py, bounded.py).
        "transactions_aborted": _said(workers, "transaction aborted"),
        "stuck_calls_given_up": _said(workers, "did not return within"),
        "producers_replaced": _said(workers, "starting a new one as"),
        "results_behind_at_end_if_missing": behind,
        "load": f"{RATE:g} tasks/s: {BEFORE_S:g} s before the kill, {DOWN_S:g} s down, {AFTER_S:g} s after",
    }
    print(f"\nbroker loss ({what}): {json.dumps(figures)}")
    logs = "\n".join(f"--- {name}, last lines:\n{''.join(w.log[-25:])}" for name, w in workers.items())
    assert not missing, (f"{len(missing)} acknowledged tasks have no result, e.g. {sorted(missing)[:5]}; {figures}\n"
                         f"{logs}\n{stacks}")
    assert not repeated, f"results committed more than once: {repeated}"
    assert not load.failed, f"the producer gave up on tasks: {list(load.failed.items())[:5]}"
    return figures


def _said(workers: dict[str, Worker], words: str) -> dict[str, int]:
    """How many lines of each worker's log say ``words``."""
    return {name: n for name, w in workers.items() if (n := sum(words in line for line in w.log))}


def _stacks(workers: dict[str, Worker]) -> str:
    """Every thread's stack in each live worker (SIGUSR1, see aios.cli.run): where a stalled one waits."""
    marks = {name: len(w.log) for name, w in workers.items()}
    for w in workers.values():
        if w.proc is not None and w.proc.poll() is None:
            w.proc.send_signal(signal.SIGUSR1)
    time.sleep(2)  # the dump is written at once; the reader thread takes it in
    return "\n".join(f"--- {name}, its threads at the settle deadline:\n{''.join(w.log[marks[name]:])}"
                     for name, w in workers.items())


def _round(value: float | None, minus: float = 0.0) -> float | None:
    return None if value is None else round(value - minus, 2)


@pytest.mark.timeout(900)
def test_losing_the_broker_that_leads_most_partitions(cluster: LocalCluster, tmp_path: Path) -> None:
    def most_leaders() -> int:
        return cluster.leaders().most_common(1)[0][0]
    lose_a_broker(cluster, tmp_path, most_leaders, "led the most partitions")
