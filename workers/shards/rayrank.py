"""A training rank started through Ray on the agent's own node, in the job's working directory
shipped as a Ray package (``runtime_env={"working_dir": "gcs://..."}``, as Ray Jobs does).

The agent asks Ray for a :class:`RankActor` pinned to its node
(``NodeAffinitySchedulingStrategy``, not soft); Ray downloads and unpacks the package there
and starts the actor in it; the actor runs the rank's command as a :class:`LocalRank`
with that folder as its working directory and the agent's log file for its output (the
same machine). The package stays pinned in Ray's GCS while ranks of the job run, so a
job placed again after a lost node still finds it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from greenllm.errors import GreenllmError
from workers.shards.rankenv import full_env
from workers.shards.rankproc import LocalRank

log = logging.getLogger(__name__)

#: How long a pin keeps a package in the GCS, seconds (renewed while a rank runs).
PIN_S = 600
#: How often a running rank renews the pin, seconds.
REPIN_EVERY_S = 240.0


@ray.remote(num_cpus=0, max_concurrency=4, max_restarts=0)  # type: ignore[call-overload]
class RankActor:
    """Runs one rank's command in the actor's working directory (the unpacked package)."""

    def __init__(self) -> None:
        self._rank: LocalRank | None = None

    def run(self, command: list[str], overrides: dict[str, str], log_path: str) -> int:
        """Run the command to its end; its exit status (-1: it could not start)."""
        rank = LocalRank(command, full_env(overrides), Path(os.getcwd()), Path(log_path))
        self._rank = rank
        rank.start()
        return rank.wait()

    def terminate(self) -> None:
        """SIGTERM to the rank's process group."""
        if self._rank is not None:
            self._rank.terminate()

    def kill(self) -> None:
        """SIGKILL to the rank's process group."""
        if self._rank is not None:
            self._rank.kill()


def pin(uri: str) -> None:
    """Keep package ``uri`` in the GCS for :data:`PIN_S` more seconds (best effort)."""
    try:
        from ray._private.runtime_env.packaging import pin_runtime_env_uri

        pin_runtime_env_uri(uri, expiration_s=PIN_S)
    except Exception as exc:  # a failed pin only shortens how long the package is kept
        log.warning("cannot pin %s in Ray's GCS: %s", uri, exc)


def one_line(exc: BaseException) -> str:
    """The first meaningful line of a Ray error (they carry whole tracebacks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Traceback", "File ", "ray."))]
    text = (useful or lines or [type(exc).__name__])[-1]
    return f"{type(exc).__name__}: {text}"[:500]


class RayRank:
    """A rank run by a :class:`RankActor` on this node (see the module docstring).

    Args:
        uri: The job's package (``gcs://_ray_pkg_<hash>.zip``).
        command: The rank's command.
        overrides: Its variables on top of the actor's environment.
        log_path: Where its output goes (on this machine).

    Raises:
        GreenllmError: This process is not part of a Ray cluster.
    """

    def __init__(
        self, uri: str, command: list[str], overrides: dict[str, str], log_path: Path
    ) -> None:
        if not ray.is_initialized():
            raise GreenllmError(
                f"working_dir {uri} is a Ray package, but this agent does not run on Ray "
                "(start the cluster with greenllm up)"
            )
        self.uri = uri
        self.command = command
        self.overrides = overrides
        self.log_path = log_path
        self.actor: Any = None
        self._ref: Any = None
        self._code: int | None = None
        self._error: str | None = None
        self._pinned_s = 0.0

    def start(self) -> None:
        """Ask Ray for the actor on this node and start the command."""
        pin(self.uri)
        self._pinned_s = time.monotonic()
        node_id = ray.get_runtime_context().get_node_id()
        self.actor = RankActor.options(  # type: ignore[attr-defined]
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            runtime_env={"working_dir": self.uri},
        ).remote()
        self._ref = self.actor.run.remote(self.command, self.overrides, str(self.log_path))

    def poll(self) -> int | None:
        """Exit status once the command ended (-1 when it could not run), else None."""
        if self._code is not None or self._ref is None:
            return self._code
        if time.monotonic() - self._pinned_s > REPIN_EVERY_S:
            pin(self.uri)
            self._pinned_s = time.monotonic()
        ready, _ = ray.wait([self._ref], timeout=0)
        if not ready:
            return None
        try:
            self._code = int(ray.get(self._ref))
        except Exception as exc:  # runtime env setup failed, the actor died, ...
            self._error = one_line(exc)
            self._code = -1
        self._release()
        return self._code

    def _release(self) -> None:
        if self.actor is not None:
            try:
                ray.kill(self.actor)
            except Exception as exc:
                log.debug("rank actor already gone: %s", exc)

    def terminate(self) -> None:
        """Ask the actor to SIGTERM the rank."""
        if self.actor is not None and self._code is None:
            self.actor.terminate.remote()

    def kill(self) -> None:
        """Kill the actor, and with it the rank (it dies with its parent thread)."""
        if self.actor is not None:
            try:
                ray.get(self.actor.kill.remote(), timeout=2.0)
            except Exception as exc:  # the actor may be gone or still starting
                log.debug("rank actor did not take the kill: %s", exc)
            finally:
                self._release()
            if self._code is None:
                self._code = -9

    def failure(self) -> str | None:
        """Why the rank could not run (runtime environment, actor), None otherwise."""
        return self._error
