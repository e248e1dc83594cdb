"""How a training job's working directory reaches every node: the way Ray Jobs ships it.

When the cluster runs on Ray (``greenllm up`` wrote ``<state_dir>/runtime.json``),
``submit`` packages the folder with Ray's own packaging into Ray's GCS and puts the package
URI (``gcs://_ray_pkg_<hash>.zip``) in the spec; each agent has Ray unpack it on its node.
Otherwise the agents use the folder as it is (one machine, or a path shared by all).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from greenllm.config import ClusterConfig
from greenllm.errors import GreenllmError
from greenllm.jobspec import JobSpec, is_package_uri
from greenllm.rpc.locate import LOCAL_RAY_ENV


def ray_address(config: ClusterConfig) -> str | None:
    """The Ray cluster greenllm runs on (from ``<state_dir>/runtime.json``), if any."""
    try:
        doc = json.loads((config.state_dir / "runtime.json").read_text())
    except (OSError, ValueError):
        return None
    address = doc.get("address") if isinstance(doc, dict) else None
    return address if isinstance(address, str) and address else None


def upload_to_ray(folder: Path, address: str) -> str:
    """Package ``folder`` into the GCS of the Ray cluster at ``address`` (as ``ray job
    submit`` does: .gitignore and Ray's default excludes apply); returns its URI.

    Raises:
        GreenllmError: The upload failed (one line).
    """
    if address.rpartition(":")[0].strip("[]") in ("127.0.0.1", "localhost", "::1"):
        for key, value in LOCAL_RAY_ENV.items():  # the local cluster of `greenllm up`
            os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    quiet = logging.getLogger("greenllm.upload")
    quiet.setLevel(logging.ERROR)
    started = not ray.is_initialized()
    try:
        if started:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        with tempfile.TemporaryDirectory(prefix="greenllm-pkg-") as scratch:
            env = upload_working_dir_if_needed(
                {"working_dir": str(folder)}, True, scratch_dir=scratch, logger=quiet
            )
    except Exception as exc:  # Ray's errors carry tracebacks: keep one line
        lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        raise GreenllmError(f"cannot upload {folder} to Ray at {address}: {lines[-1]}") from None
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    return str(env["working_dir"])


def ship_working_dir(spec: JobSpec, config: ClusterConfig) -> JobSpec:
    """``spec`` with its local ``train.working_dir`` uploaded to the cluster's Ray (when it
    runs on Ray) and replaced by the package URI."""
    train = spec.train
    if train is None or not train.working_dir or is_package_uri(train.working_dir):
        return spec
    address = ray_address(config)
    if address is None:
        return spec
    uri = upload_to_ray(Path(train.working_dir), address)
    return spec.model_copy(update={"train": train.model_copy(update={"working_dir": uri})})
