"""Bearer tokens: two roles, stored in ``<state_dir>/tokens`` (mode 0600).

The controller creates the file on its first start. Operators' tools read the
operator token from ``$GREENLLM_TOKEN`` or from that file; agents read the agent
token from ``$GREENLLM_AGENT_TOKEN`` or from that file. Every RPC carries
``authorization: Bearer <token>`` in its metadata.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from greenllm.errors import GreenllmError

TOKENS_FILE = "tokens"
OPERATOR_TOKEN_ENV = "GREENLLM_TOKEN"
AGENT_TOKEN_ENV = "GREENLLM_AGENT_TOKEN"
AUTHORIZATION_KEY = "authorization"
_BEARER = "Bearer "


class Role(Enum):
    """Who a token belongs to."""

    OPERATOR = "operator"
    AGENT = "agent"


@dataclass(frozen=True)
class Tokens:
    """The two secrets of a cluster."""

    operator: str
    agent: str

    def role_of(self, token: str) -> Role | None:
        """The role ``token`` grants, or None (compared in constant time)."""
        found = None
        for role, secret in ((Role.OPERATOR, self.operator), (Role.AGENT, self.agent)):
            if hmac.compare_digest(token.encode(), secret.encode()):
                found = role
        return found


def tokens_path(state_dir: Path) -> Path:
    """Where a cluster's tokens live."""
    return Path(state_dir) / TOKENS_FILE


def load_or_create_tokens(state_dir: Path) -> Tokens:
    """Read the tokens, creating the file (mode 0600) with fresh secrets if absent.

    Raises:
        GreenllmError: The file exists but is unreadable or malformed.
    """
    path = tokens_path(state_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tokens = Tokens(operator=secrets.token_urlsafe(32), agent=secrets.token_urlsafe(32))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"operator": tokens.operator, "agent": tokens.agent}, f)
        return tokens
    return read_tokens(state_dir)


def read_tokens(state_dir: Path) -> Tokens:
    """Read the tokens file.

    Raises:
        GreenllmError: Missing, unreadable or malformed.
    """
    path = tokens_path(state_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Tokens(operator=str(data["operator"]), agent=str(data["agent"]))
    except FileNotFoundError:
        raise GreenllmError(
            f"{path}: no tokens file (the controller creates it on its first start)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GreenllmError(f"{path}: unreadable tokens file: {exc}") from None


def operator_token(state_dir: Path) -> str:
    """The operator token: ``$GREENLLM_TOKEN``, else the state directory's tokens file."""
    return os.environ.get(OPERATOR_TOKEN_ENV) or read_tokens(state_dir).operator


def agent_token(state_dir: Path) -> str:
    """The agent token: ``$GREENLLM_AGENT_TOKEN``, else the state directory's tokens file."""
    return os.environ.get(AGENT_TOKEN_ENV) or read_tokens(state_dir).agent


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying ``token`` (none when ``token`` is None)."""
    return () if token is None else ((AUTHORIZATION_KEY, _BEARER + token),)


def token_from_metadata(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The bearer token in call metadata, or None when absent or not a bearer value."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY and isinstance(value, str) and value.startswith(_BEARER):
            return value[len(_BEARER) :]
    return None
