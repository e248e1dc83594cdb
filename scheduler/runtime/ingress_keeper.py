"""Starts the inference ingress on Ray Serve when the first inference job is active, and
tells the controller where it serves (so jobs show their ``endpoint``).

Serve costs a few seconds and a proxy process, so a cluster that runs no inference never
starts it. Once up it stays for the cluster's life; ``greenllm down`` removes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from greenllm.config import ClusterConfig
from scheduler.runtime.agents import runtime_part

log = logging.getLogger(__name__)

#: Seconds between looks for an active inference job.
POLL_S = 1.0
#: Seconds before trying again after Serve failed to start the ingress.
RETRY_S = 30.0


class IngressKeeper:
    """A thread that deploys the ingress once it is needed (see module doc).

    Args:
        config: The cluster config.
        controller_address: Where the controller listens (``host:port``).
        token: Operator token for the ingress's calls (None: auth is off).
        ca_pem: CA certificate of the controller's TLS (None: plaintext or the config's).
        needed: Returns whether an inference job is active (called on this thread).
        tell: Gives the controller the ingress's base URL (called after every look, so a
            restarted controller learns it again).
    """

    def __init__(
        self,
        config: ClusterConfig,
        controller_address: str,
        token: str | None,
        ca_pem: bytes | None,
        needed: Callable[[], bool],
        tell: Callable[[str], None],
    ) -> None:
        self.config, self.controller_address = config, controller_address
        self.token, self.ca_pem = token, ca_pem
        self._needed, self._tell = needed, tell
        self.url = ""
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingress-keeper", daemon=True)

    def start(self) -> IngressKeeper:
        """Start watching; returns the keeper."""
        if self.config.serve.enabled:
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (the ingress stays up)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                if not self.url and self._needed():
                    self._deploy()
                if self.url:
                    self._tell(self.url)
            except Exception as exc:  # the controller restarting: look again next time
                log.debug("ingress keeper: %s", exc)

    def _deploy(self) -> None:
        deploy_ingress = runtime_part("ingress")

        serve = self.config.serve
        log.info("starting the inference ingress on Ray Serve (port %d)", serve.port)
        try:
            url = deploy_ingress(
                self.config,
                self.controller_address,
                self.token,
                self.ca_pem,
                serve.host,
                serve.port,
            )
        except Exception as exc:  # Serve's errors are of many kinds; all are reported
            self.error = f"the inference ingress did not start: {exc}"
            log.error("%s (trying again in %.0f s)", self.error, RETRY_S)
            self._stop.wait(RETRY_S)
            return
        self.url, self.error = url, None
        log.info("inference ingress serving at %s", url)
