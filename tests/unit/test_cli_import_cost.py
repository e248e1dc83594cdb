"""`greenllm` commands that do not run a model must not import torch (seconds per call):
a sim module importing the model registry made every CLI call, `greenllm status` included,
~4 s slower and every live e2e test 2-3x longer."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_and_its_commands_load_without_torch() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from greenllm.cli.main import cli\n"
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
        "import scheduler.sim.engine, scheduler.sim.world  # noqa: E401\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported by the CLI: {proc.stdout.strip()}"
