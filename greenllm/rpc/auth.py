"""Bearer tokens: an operator token, and one credential per node, all from the secrets in
``<state_dir>/tokens`` (mode 0600).

The controller creates the file on its first start (``greenllm up`` creates it first). It
holds two secrets: the operator token, and the *agent secret*, which never leaves the
controller's machine. Each node's agent gets its own token,
``node:<name>:<HMAC-SHA256(agent secret, name)>``: it names the node, so the controller
lets its bearer register as that node only. ``greenllm up`` hands each agent its token;
``greenllm token issue --node NAME`` prints one for an agent run by hand.

Operators' tools read the operator token from ``$GREENLLM_TOKEN`` or from the file; an
agent reads its token from ``$GREENLLM_AGENT_TOKEN`` or, on the controller's machine, derives
it from the file. Every RPC carries ``authorization: Bearer <token>`` in its metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
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
#: Shortest secret accepted in the tokens file, characters.
MIN_SECRET_CHARS = 16
#: Prefix of a node token.
NODE_TOKEN_PREFIX = "node:"
_SECRET = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MAC = re.compile(r"^[0-9a-f]{64}$")


class Role(Enum):
    """Who a token belongs to."""

    OPERATOR = "operator"
    AGENT = "agent"


@dataclass(frozen=True)
class Credential:
    """What a verified token grants.

    Attributes:
        role: Operator or agent.
        node: The node an agent token is bound to (None: the operator token, or the agent
            secret itself, which only tools on the controller's machine can read).
    """

    role: Role
    node: str | None = None


def _mac(secret: str, node: str) -> str:
    return hmac.new(secret.encode(), f"greenllm-node:{node}".encode(), hashlib.sha256).hexdigest()


def node_token(secret: str, node: str) -> str:
    """The token of node ``node``, derived from the agent secret.

    Raises:
        GreenllmError: ``node`` is not a valid node name.
    """
    if not _NODE_NAME.match(node):
        raise GreenllmError(f"{node[:80]!r} is not a valid node name")
    return f"{NODE_TOKEN_PREFIX}{node}:{_mac(secret, node)}"


def node_of_token(token: str) -> str | None:
    """The node a well-formed node token names (not verified), or None when malformed."""
    if not token.startswith(NODE_TOKEN_PREFIX):
        return None
    node, sep, mac = token[len(NODE_TOKEN_PREFIX) :].rpartition(":")
    if not sep or not _NODE_NAME.match(node) or not _MAC.match(mac):
        return None
    return node


@dataclass(frozen=True)
class Tokens:
    """The two secrets of a cluster: the operator token and the agent secret."""

    operator: str
    agent: str

    def verify(self, token: str) -> Credential | None:
        """What ``token`` grants, or None (every comparison in constant time)."""
        found = None
        for role, secret in ((Role.OPERATOR, self.operator), (Role.AGENT, self.agent)):
            if hmac.compare_digest(token.encode(), secret.encode()):
                found = Credential(role)
        node = node_of_token(token)
        if node is not None and hmac.compare_digest(token.encode(), self.node(node).encode()):
            found = Credential(Role.AGENT, node)
        return found

    def role_of(self, token: str) -> Role | None:
        """The role ``token`` grants, or None."""
        credential = self.verify(token)
        return None if credential is None else credential.role

    def node(self, name: str) -> str:
        """The token of node ``name``."""
        return node_token(self.agent, name)


def check_secret(value: object, what: str) -> str:
    """``value`` if it can be a secret (a string of at least :data:`MIN_SECRET_CHARS`
    printable characters, no spaces).

    Raises:
        GreenllmError: Empty, null, too short or malformed; names ``what``.
    """
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise GreenllmError(f"{what} is {kind}, not a string")
    if not value:
        raise GreenllmError(f"{what} is empty")
    if len(value) < MIN_SECRET_CHARS or not _SECRET.match(value):
        raise GreenllmError(
            f"{what} is malformed (expected at least {MIN_SECRET_CHARS} printable characters, "
            "no spaces)"
        )
    return value


def check_node_token(token: str, node: str, source: str) -> str:
    """``token`` if it is well formed and names ``node`` (its MAC is checked by the
    controller).

    Raises:
        GreenllmError: One line naming ``source`` and what is wrong.
    """
    named = node_of_token(token.strip())
    if named is None:
        raise GreenllmError(
            f"{source} is not a node token (expected node:<name>:<64 hex digits>, as "
            f"`greenllm token issue --node {node}` prints)"
        )
    if named != node:
        raise GreenllmError(f"{source} is the token of node {named!r}, not of node {node!r}")
    return token.strip()


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
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another process: read that one
            return read_tokens(state_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"operator": tokens.operator, "agent": tokens.agent}, f)
        return tokens
    return read_tokens(state_dir)


def read_tokens(state_dir: Path) -> Tokens:
    """Read the tokens file.

    Raises:
        GreenllmError: Missing, unreadable or malformed (an empty, null or short secret).
    """
    path = tokens_path(state_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GreenllmError(
            f"{path}: no tokens file (the controller creates it on its first start)"
        ) from None
    except (OSError, ValueError) as exc:
        raise GreenllmError(f"{path}: unreadable tokens file: {exc}") from None
    if not isinstance(data, dict):
        raise GreenllmError(f"{path}: unreadable tokens file: not a JSON object")
    operator = check_secret(data.get("operator"), f"{path}: operator")
    agent = check_secret(data.get("agent"), f"{path}: agent")
    if hmac.compare_digest(operator.encode(), agent.encode()):
        raise GreenllmError(f"{path}: the operator and agent secrets must differ")
    return Tokens(operator=operator, agent=agent)


def operator_token(state_dir: Path) -> str:
    """The operator token: ``$GREENLLM_TOKEN``, else the state directory's tokens file."""
    return os.environ.get(OPERATOR_TOKEN_ENV) or read_tokens(state_dir).operator


def agent_token_from_env(node: str) -> str | None:
    """``$GREENLLM_AGENT_TOKEN`` checked against ``node``, or None when it is unset.

    Raises:
        GreenllmError: It is set but empty, malformed or another node's token.
    """
    value = os.environ.get(AGENT_TOKEN_ENV)
    if value is None:
        return None
    if not value.strip():
        raise GreenllmError(f"${AGENT_TOKEN_ENV} is set but empty")
    return check_node_token(value, node, f"${AGENT_TOKEN_ENV}")


def agent_token(state_dir: Path, node: str) -> str:
    """Node ``node``'s token: ``$GREENLLM_AGENT_TOKEN``, else derived from the state
    directory's agent secret (on the controller's machine).

    Raises:
        GreenllmError: The variable is malformed or another node's, or there is no tokens
            file.
    """
    return agent_token_from_env(node) or read_tokens(state_dir).node(node)


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying ``token`` (none when ``token`` is None)."""
    return () if token is None else ((AUTHORIZATION_KEY, _BEARER + token),)


def token_from_metadata(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The bearer token in call metadata, or None when absent or not a bearer value."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY and isinstance(value, str) and value.startswith(_BEARER):
            return value[len(_BEARER) :]
    return None
