"""Sprints: a plan's milestones run one at a time, each closed by a review and a re-plan.

A sprint opens (after an approval, if its milestone asks for one) once the sprint before it is
closed; its tasks then run as any task does. When every task of the sprint has ended, the
``reviewer`` role gets a review step (``<milestone>:review``) that depends on the sprint's
successful tasks, so it reads their outputs, and lists their acceptance criteria. Then the
``planner`` role gets a re-plan step (``<milestone>:replan``) that reads the review and the
remaining plan, and answers with a change: tasks to add or change, ids to remove, milestones to
add. The change is validated like any plan (roles, dependencies, cycles, milestones, limits) and
against the budget; an invalid one fails that attempt with the reason, and a re-plan that fails
for good leaves the remaining plan as it was: the project goes on.

Pure: the orchestrator's state (state.py) holds a :class:`Sprints` and logs it in the project's
entry; review and re-plan steps are DAG nodes, so dispatch, retries, timeouts and exactly-once
results are the same as for any task.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from aios.schemas.jsonlimits import JsonTooDeepError, parse_json
from aios.schemas.limits import MAX_DESCRIPTION_CHARS, MAX_REASON_CHARS, cut
from aios.streams.orchestration.dag import TERMINAL, Node, ProjectDag, State, node_of
from aios.streams.orchestration.graph import topological_order
from aios.streams.orchestration.plan import (
    REPLAN_SUFFIX,
    REVIEW_SUFFIX,
    Estimate,
    Milestone,
    Plan,
    PlanError,
    PlannedTask,
    validate_plan,
)

REVIEWER_ROLE = "reviewer"
PLANNER_ROLE = "planner"
REVIEW, REPLAN = "review", "replan"  # Node.kind of a sprint's own steps
# Sprint states, in the order a sprint goes through them.
PLANNED, AWAITING_APPROVAL, RUNNING, REVIEWING, REPLANNING, DONE = (
    "planned", "awaiting_approval", "running", "reviewing", "replanning", "done")
REJECTED, CANCELLED = "rejected", "cancelled"
MAX_LISTED_IDS = 100  # ids a re-plan's record lists per kind of change (the counts are whole)
_REMAINING_TASK_CHARS = 400  # a remaining task's description, as the re-plan step shows it


@dataclass
class Sprint:
    id: str
    number: int
    title: str = ""
    requires_approval: bool = False
    state: str = PLANNED
    approved: bool = False
    opened_ms: int | None = None
    closed_ms: int | None = None
    verdict: str = ""  # the review's verdict and summary


@dataclass
class Replan:
    """What one re-plan did: ``applied`` with its changes, or ``failed`` with the reason."""

    after: str  # the milestone whose end it followed
    state: str
    summary: str = ""
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # added/removed/changed, uncut
    error: str = ""


@dataclass
class PlanChange:
    """A validated re-plan, ready to apply."""

    summary: str
    added: list[PlannedTask]
    changed: list[PlannedTask]
    removed: list[str]
    milestones: list[Milestone]  # new ones (appended) and updated remaining ones


def milestone_of(node: Node, sprints: list[Sprint]) -> str:
    return sprints[node.sprint - 1].id if 0 < node.sprint <= len(sprints) else ""


class Sprints:
    """A project's sprints and the record of its re-plans."""

    def __init__(self, sprints: list[Sprint] | None = None, replans: list[Replan] | None = None) -> None:
        self.sprints = sprints or []
        self.replans = replans or []

    @classmethod
    def of(cls, milestones: Iterable[Milestone]) -> Sprints:
        book = cls()
        book.add_milestones(milestones)
        return book

    def add_milestones(self, milestones: Iterable[Milestone]) -> None:
        known = {s.id: s for s in self.sprints}
        for m in milestones:
            if m.id in known:
                known[m.id].title, known[m.id].requires_approval = m.title, m.requires_approval
            else:
                self.sprints.append(Sprint(m.id, len(self.sprints) + 1, m.title, m.requires_approval))

    def number(self, milestone: str) -> int:
        return next((s.number for s in self.sprints if s.id == milestone), 0)

    def to_meta(self) -> dict[str, Any]:
        return {"sprints": [vars(s) for s in self.sprints], "replans": [vars(r) for r in self.replans]}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Sprints:
        return cls([Sprint(**s) for s in meta.get("sprints", ())], [Replan(**r) for r in meta.get("replans", ())])

    # --- the sprint loop ---------------------------------------------------------------------

    def advance(self, dag: ProjectDag, *, now_ms: int, roles: set[str], halted: bool,
                budget_line: str, approve_every: bool = False) -> list[Node]:
        """Move the sprints on as far as the DAG allows; return the review/re-plan steps added.

        ``halted`` (the project is cancelled or its budget spent) adds no step and opens nothing;
        with ``approve_every``, every sprint after the first waits for an approval.
        """
        added: list[Node] = []
        if not self.sprints or halted:
            return added
        for _ in range(3 * len(self.sprints) + 2):  # each pass moves one sprint one state on
            k = dag.open_sprint
            cur = self.sprints[k - 1] if 0 < k <= len(self.sprints) else None
            if cur is None or cur.state in (DONE, REJECTED):
                if cur is None and not _ended(dag, 0):
                    return added  # the work before the first sprint (a goal's plan) comes first
                if k >= len(self.sprints):
                    return added
                nxt = self.sprints[k]
                if (nxt.requires_approval or approve_every and nxt.number > 1) and not nxt.approved:
                    nxt.state = AWAITING_APPROVAL
                    return added
                nxt.state, nxt.opened_ms = RUNNING, now_ms
                dag.open(nxt.number)
                continue  # an empty sprint closes at once
            if cur.state == RUNNING:
                if not _ended(dag, k):
                    return added
                if not _work(dag, k):  # nothing ran (a re-plan emptied it): nothing to review or learn
                    cur.state, cur.closed_ms = DONE, now_ms
                    continue
                cur.state = REVIEWING
                if REVIEWER_ROLE in roles:
                    added.append(self._add_review(dag, cur))
                    return added
                continue
            step = dag.nodes.get(cur.id + (REVIEW_SUFFIX if cur.state == REVIEWING else REPLAN_SUFFIX))
            if step is not None and step.state not in TERMINAL:
                return added
            if cur.state == REVIEWING:
                if k < len(self.sprints) and PLANNER_ROLE in roles:
                    cur.state = REPLANNING
                    added.append(self._add_replan(dag, cur, step, budget_line))
                    return added
            elif step is not None and step.state is not State.SUCCEEDED:
                self.replans.append(Replan(cur.id, "failed", error=cut(
                    f"{step.reason or step.state.value}; the remaining plan was kept", MAX_REASON_CHARS)))
            cur.state, cur.closed_ms = DONE, now_ms
        return added

    def _add_review(self, dag: ProjectDag, sprint: Sprint) -> Node:
        work = _work(dag, sprint.number)
        lines = [f"Review sprint {sprint.id}" + (f" ({sprint.title})" if sprint.title else "") + ": check each "
                 "task's output (in your context) against its acceptance criterion. Answer with a verdict per "
                 'task in "tasks": [{"id", "verdict": "approve" | "request_changes", "comment"}], and the '
                 "sprint's verdict in \"verdict\".", "Tasks:"]
        for n in work:
            acceptance = "(restricted)" if n.privacy == "restricted" else (n.acceptance or "(none given)")
            lines.append(f"- {n.id} ({n.role}, {n.state.value}): acceptance: {cut(acceptance, 1_000)}")
        node = Node(sprint.id + REVIEW_SUFFIX, REVIEWER_ROLE, 0,
                    tuple(n.id for n in work if n.state is State.SUCCEEDED),
                    description=cut("\n".join(lines), MAX_DESCRIPTION_CHARS),
                    acceptance="A verdict for every task of the sprint.", sprint=sprint.number, kind=REVIEW)
        dag.add(node)
        return node

    def _add_replan(self, dag: ProjectDag, sprint: Sprint, review: Node | None, budget_line: str) -> Node:
        remaining = [{"id": n.id, "role": n.role, "milestone": milestone_of(n, self.sprints),
                      "description": "(restricted)" if n.privacy == "restricted" else cut(n.description,
                                                                                          _REMAINING_TASK_CHARS),
                      "depends_on": list(n.depends_on), "acceptance": cut(n.acceptance, 200),
                      "estimate": {"tokens": n.estimate_tokens, "seconds": n.estimate_seconds,
                                   "cost_usd": n.estimate_usd}}
                     for n in dag.nodes.values() if n.sprint > sprint.number and not n.kind]
        later = [{"id": s.id, "title": s.title} for s in self.sprints[sprint.number:]]
        text = "\n".join([
            f"Re-plan the remaining work after sprint {sprint.id}, from what its review (in your context) "
            f"found. {budget_line}",
            'Answer with the planner contract, as a change: "tasks" lists tasks to add, or to change (an '
            'existing id), each naming its "milestone"; "remove" lists ids of remaining tasks to drop; '
            '"milestones" may add sprints after the remaining ones. Tasks you do not list stay as they are; '
            "tasks of sprints that have run cannot change.",
            f"Remaining milestones: {json.dumps(later, ensure_ascii=False)}",
            f"Remaining tasks: {json.dumps(remaining, ensure_ascii=False)}"])
        deps = (review.id,) if review is not None and review.state is State.SUCCEEDED else ()
        node = Node(sprint.id + REPLAN_SUFFIX, PLANNER_ROLE, 0, deps,
                    description=cut(text, MAX_DESCRIPTION_CHARS),
                    acceptance="A valid change to the remaining plan, within the budget.",
                    sprint=sprint.number, kind=REPLAN)
        dag.add(node)
        return node

    # --- reviews -----------------------------------------------------------------------------

    def on_review(self, dag: ProjectDag, review: Node, output: str) -> None:
        """Record the review's verdicts on the sprint and on each task it names."""
        sprint = self.sprints[review.sprint - 1]
        answer = _object(output)
        verdict, summary = answer.get("verdict"), answer.get("summary")
        sprint.verdict = cut(f"{verdict if isinstance(verdict, str) else 'no verdict'}: "
                             f"{summary if isinstance(summary, str) else ''}", 500)
        entries = answer.get("tasks")
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict):
                continue
            tid = entry.get("id")
            node = dag.nodes.get(tid) if isinstance(tid, str) else None
            if node is None or node.sprint != sprint.number or node.kind:
                continue
            v, comment = entry.get("verdict"), entry.get("comment")
            node.review = cut(f"{v if isinstance(v, str) else 'unclear'}"
                              + (f": {comment}" if isinstance(comment, str) and comment else ""), MAX_REASON_CHARS)
            dag.touched.add(node.id)

    # --- re-plans ----------------------------------------------------------------------------

    def plan_change(self, dag: ProjectDag, replan: Node, output: str, roles: Iterable[str], *,
                    budget_usd: float | None, cost_usd: float, carry: tuple[str, ...] = ()) -> PlanChange:
        """The re-plan's answer as a validated change; PlanError naming every problem otherwise.
        Every task it adds or changes also depends on the ``carry`` tasks (a goal's plan)."""
        after = replan.sprint
        answer = _object(output, strict=True)
        remaining = {t: n for t, n in dag.nodes.items() if n.sprint > after and not n.kind
                     and n.state is State.PENDING and n.attempts == 0}
        problems: list[str] = []
        milestones = _listed(answer, "milestones", problems)
        tasks = _listed(answer, "tasks", problems)
        removed = _listed(answer, "remove", problems)
        new_ms: list[Milestone] = []
        for raw in milestones:
            try:
                m = Milestone.model_validate(raw)
            except ValidationError as exc:
                problems += [f"milestones: {e['msg']}" for e in exc.errors()]
                continue
            if 0 < self.number(m.id) <= after:
                problems.append(f"milestone {m.id!r} has run; a re-plan adds or changes later ones only")
            new_ms.append(m)
        default_ms = self.sprints[after].id if after < len(self.sprints) else (new_ms[0].id if new_ms else "")
        planned: list[PlannedTask] = []
        for raw in tasks:
            if not isinstance(raw, dict):
                problems.append("tasks: every entry must be an object")
                continue
            kept = {k: raw[k] for k in ("id", "role", "description", "depends_on", "priority", "acceptance",
                                        "milestone", "estimate") if k in raw}
            kept.setdefault("milestone", default_ms)
            if carry and isinstance(kept.get("depends_on", []), list):
                kept["depends_on"] = [*carry, *(d for d in kept.get("depends_on", []) if d not in carry)]
            try:
                planned.append(PlannedTask.model_validate(kept))
            except ValidationError as exc:
                problems += [f"task {raw.get('id')!r}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors()]
        drop = list(dict.fromkeys(r for r in removed if isinstance(r, str)))
        if any(not isinstance(r, str) for r in removed):
            problems.append("remove: every entry must be a task id")
        both = sorted({t.id for t in planned} & set(drop))
        if both:
            problems.append(f"tasks {', '.join(map(repr, both))} are both listed and removed; choose one")
        for tid in [*(t.id for t in planned), *drop]:
            if tid in dag.nodes and tid not in remaining:
                problems.append(f"task {tid!r} has started or belongs to a sprint that has run; "
                                "a re-plan changes only the remaining work")
        for i, t in enumerate(planned):
            if 0 < self.number(t.milestone) <= after:
                problems.append(f"task {t.id!r}: milestone {t.milestone!r} has run; name a later one")
            node = remaining.get(t.id)
            if node is not None:
                if node.privacy == "restricted":
                    problems.append(f"task {t.id!r} is restricted: a re-plan may remove it, not change it")
                # What the planner does not see or decide stays as it was.
                planned[i] = t.model_copy(update={"requires_approval": node.requires_approval})
        if problems:
            raise PlanError(problems)
        change = PlanChange(_summary(answer), [t for t in planned if t.id not in dag.nodes],
                            [t for t in planned if t.id in dag.nodes and _planned(dag.nodes[t.id], self) != t],
                            [r for r in drop if r in dag.nodes], new_ms)
        self._validate(dag, change, roles, after, budget_usd=budget_usd, cost_usd=cost_usd)
        return change

    def _validate(self, dag: ProjectDag, change: PlanChange, roles: Iterable[str], after: int, *,
                  budget_usd: float | None, cost_usd: float) -> None:
        """The plan the change would leave, checked as any plan is, and its estimates within budget."""
        replaced = {t.id for t in change.changed} | set(change.removed)
        kept = [_planned(n, self) for n in dag.nodes.values() if not n.kind and n.id not in replaced]
        tasks = [*kept, *change.changed, *change.added]
        ms = [Milestone(id=s.id, title=s.title, requires_approval=s.requires_approval) for s in self.sprints]
        ms += [m for m in change.milestones if not self.number(m.id)]
        try:
            plan = Plan.model_validate({"project": dag.project, "tasks": tasks, "milestones": ms})
        except ValidationError as exc:
            raise PlanError([f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()][:20]) from exc
        # Roles of tasks that already ran are not the re-plan's to answer for.
        validate_plan(plan, {*roles, *(t.role for t in kept)})
        if budget_usd is not None:
            later = {m.id for m in ms[after:]}
            estimate = sum(t.estimate.cost_usd for t in tasks if t.milestone in later and t.estimate)
            if cost_usd + estimate > budget_usd:
                raise PlanError([f"the remaining work is estimated at ${estimate:.4f}, over the "
                                 f"${max(budget_usd - cost_usd, 0):.4f} left of the ${budget_usd:.4f} budget"])

    def apply(self, dag: ProjectDag, replan: Node, change: PlanChange) -> tuple[list[str], list[Node]]:
        """Apply a validated change; return the ids that left the DAG and the nodes that joined."""
        self.add_milestones(change.milestones)
        gone = [t.id for t in change.changed] + change.removed
        for tid in gone:
            dag.drop(tid)
        new = {t.id: t for t in [*change.changed, *change.added]}
        joined: list[Node] = []
        for tid in topological_order({t.id: t.depends_on for t in new.values()}):
            node = node_of(new[tid], self.number(new[tid].milestone))
            dag.add(node, ready=False)
            joined.append(node)
        dag.reindex_edges()
        for node in joined:
            dag.settle(node)
        counts = {"added": len(change.added), "removed": len(change.removed), "changed": len(change.changed)}
        self.replans.append(Replan(self.sprints[replan.sprint - 1].id, "applied", change.summary,
                                   [t.id for t in change.added][:MAX_LISTED_IDS], change.removed[:MAX_LISTED_IDS],
                                   [t.id for t in change.changed][:MAX_LISTED_IDS], counts))
        return gone, joined

    # --- approvals ---------------------------------------------------------------------------

    def approve(self, milestone: str) -> bool:
        """Approve a sprint (ahead of time, or while it waits); False when no sprint has that id."""
        sprint = next((s for s in self.sprints if s.id == milestone), None)
        if sprint is None:
            return False
        sprint.approved = True
        return True

    def reject(self, dag: ProjectDag, milestone: str, reason: str) -> list[Node] | None:
        """Reject a sprint that has not opened: its tasks and every later sprint's are cancelled.
        None when no such sprint waits."""
        sprint = next((s for s in self.sprints if s.id == milestone and s.state in (PLANNED, AWAITING_APPROVAL)), None)
        if sprint is None:
            return None
        changed: list[Node] = []
        for later in self.sprints[sprint.number - 1:]:
            later.state = REJECTED if later is sprint else CANCELLED
        for tid, node in list(dag.nodes.items()):
            if node.sprint >= sprint.number and node.state not in TERMINAL:
                changed += dag.cancel(tid, f"sprint {milestone} rejected: {reason}")
        dag.open_sprint = len(self.sprints)
        return changed

    def cancel(self) -> None:
        """The project was cancelled: sprints not closed end cancelled."""
        for sprint in self.sprints:
            if sprint.state not in (DONE, REJECTED):
                sprint.state = CANCELLED

    # --- status ------------------------------------------------------------------------------

    def status(self, dag: ProjectDag) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Each sprint with its estimates against actuals, and what each re-plan changed."""
        if not self.sprints:
            return [], []
        totals = {s.number: dict.fromkeys(("tasks", "finished", "estimate_tokens", "tokens"), 0)
                  | dict.fromkeys(("estimate_seconds", "estimate_usd", "seconds", "cost_usd"), 0.0)
                  for s in self.sprints}
        for n in dag.nodes.values():
            t = totals.get(n.sprint)
            if t is None:
                continue
            if not n.kind:
                t["tasks"] += 1
                t["finished"] += n.state in TERMINAL
            for key in ("estimate_tokens", "estimate_seconds", "tokens", "seconds", "cost_usd"):
                t[key] += getattr(n, key)
            t["estimate_usd"] += n.estimate_usd
        sprints = [{"id": s.id, "title": s.title, "state": s.state, "review": s.verdict, **totals[s.number]}
                   for s in self.sprints]
        return sprints, [vars(r) | {"counts": dict(r.counts)} for r in self.replans]


def _ended(dag: ProjectDag, sprint: int) -> bool:
    return all(n.state in TERMINAL for n in dag.nodes.values() if n.sprint == sprint and not n.kind)


def _work(dag: ProjectDag, sprint: int) -> list[Node]:
    return [n for n in dag.nodes.values() if n.sprint == sprint and not n.kind]


def _planned(node: Node, book: Sprints) -> PlannedTask:
    """A node as the planned task it is now (to compare with a re-plan's, and to validate)."""
    estimate = (Estimate(tokens=node.estimate_tokens, seconds=node.estimate_seconds, cost_usd=node.estimate_usd)
                if node.estimate_tokens or node.estimate_seconds or node.estimate_usd else None)
    return PlannedTask.model_construct(
        id=node.id, role=node.role, description=node.description, depends_on=node.depends_on,
        priority=node.priority, acceptance=node.acceptance, requires_approval=node.requires_approval,
        privacy="restricted" if node.privacy == "restricted" else "normal",
        milestone=milestone_of(node, book.sprints), estimate=estimate)


def _object(output: str, *, strict: bool = False) -> dict[str, Any]:
    try:
        answer = parse_json(output)
    except (json.JSONDecodeError, JsonTooDeepError) as exc:
        if strict:
            raise PlanError([f"the answer is not a JSON object: {exc}"]) from exc
        return {}
    if not isinstance(answer, dict):
        if strict:
            raise PlanError(["the answer is not a JSON object"])
        return {}
    return answer


def _listed(answer: Mapping[str, Any], key: str, problems: list[str]) -> list[Any]:
    value = answer.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{key}: must be a list")
        return []
    return value


def _summary(answer: Mapping[str, Any]) -> str:
    summary = answer.get("summary")
    return cut(summary, MAX_REASON_CHARS) if isinstance(summary, str) else ""
