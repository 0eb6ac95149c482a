"""Who is calling: an API key's or a JWT's subject, its role and the projects it may touch."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """Each role can do what the roles below it can (see api.rbac)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    SUBMITTER = "submitter"
    VIEWER = "viewer"


ALL_PROJECTS = "*"


@dataclass(frozen=True)
class Principal:
    subject: str  # the key id or the token's `sub`
    role: Role
    projects: frozenset[str]  # ALL_PROJECTS in it means every project
    via: str  # "key" or "jwt"
    expires_at: float | None = None  # a token's `exp` (epoch seconds); keys do not expire, they are revoked

    @property
    def all_projects(self) -> bool:
        return ALL_PROJECTS in self.projects

    def sees(self, project: str) -> bool:
        return self.all_projects or project in self.projects


def parse_role(value: object) -> Role:
    try:
        return Role(str(value))
    except ValueError:
        raise ValueError(f"unknown role {value!r}; use one of: {', '.join(r.value for r in Role)}") from None
