"""Role-based access: what each role may do, and the project scope of every request.

    admin      operator + manage API keys (/v1/keys; only with every project, '*')
    operator   submitter + approve, reject, cancel
    submitter  viewer + submit tasks and projects
    viewer     read tasks, projects, results, agents, stats and the live stream

A principal only ever sees its own projects: another project's task or status is a 404, so its
existence does not leak; writing into another project is a 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum

from fastapi import Request

from aios.api.auth import principal_of
from aios.api.errors import Forbidden
from aios.api.principal import Principal, Role


class Permission(StrEnum):
    READ = "read"
    SUBMIT = "submit"
    CONTROL = "control"
    ADMIN = "admin"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.SUBMITTER: frozenset({Permission.READ, Permission.SUBMIT}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.SUBMIT, Permission.CONTROL}),
    Role.ADMIN: frozenset(Permission),
}


def allowed(principal: Principal, permission: Permission) -> bool:
    return permission in GRANTS[principal.role]


def require(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """A route dependency: the authenticated principal, if its role grants ``permission``."""
    async def check(request: Request) -> Principal:
        principal = principal_of(request)
        if not allowed(principal, permission):
            raise Forbidden(f"role {principal.role.value!r} may not {permission.value}; "
                            "ask an admin for a key with a role that may")
        if permission is Permission.ADMIN and not principal.all_projects:
            # Managing keys spans projects: a project-scoped admin could otherwise mint a '*' key.
            raise Forbidden("managing API keys needs an admin credential for every project ('*')")
        return principal
    return check


def check_write(principal: Principal, project: str) -> None:
    if not principal.sees(project):
        raise Forbidden(f"this credential is not for project {project!r}")
