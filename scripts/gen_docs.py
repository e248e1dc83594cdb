"""Write the references in docs/ from the code: ``.venv/bin/python scripts/gen_docs.py``.

``--check`` writes nothing and exits 1 when a checked-in file differs from what the code
gives now (``tests/unit/test_ux_docs.py`` does the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import doc_meanings as meanings
import doc_samples as samples

from greenllm.config import ClusterConfig, registered_policies
from greenllm.devices.catalog import CATALOG
from greenllm.docgen import GENERATED_NOTE, UNDOCUMENTED, keys_reference, model_reference
from greenllm.jobspec import JobSpec
from greenllm.loading import MAX_DEPTH, MAX_FILE_BYTES, MAX_VALUES
from greenllm.policy_guide import GUIDES, ORACLE, guide

REPO = samples.REPO
DOCS = REPO / "docs"

LOADING = (
    "Every problem is one line on stderr, `FILE: field.path: problem` (or `FILE:LINE:COL: "
    "invalid YAML: ...`), never a traceback. Unknown keys are errors, reported first, with a "
    "did-you-mean when a known key is close; a key given twice is an error naming both "
    f"lines. Files must be UTF-8, at most {MAX_FILE_BYTES // 2**20} MiB, nested at most "
    f"{MAX_DEPTH} levels, and hold at most {MAX_VALUES:,} values once YAML aliases are "
    "expanded."
)

#: Meanings the cluster.yaml models' docstrings do not give.
CLUSTER_KEYS = {
    "ClusterConfig": {
        "name": "Cluster name.",
        "nodes": "The nodes and their GPUs.",
        "budget": "The global power budget.",
        "policy": "Allocation policy (see docs/policies.md).",
        "control_period_s": "Seconds between allocations (decide() calls).",
        "telemetry_interval_s": "Seconds between GPU samples on each agent.",
        "failsafe": "What an agent does when it loses the controller.",
        "state_dir": "Folder for the controller's state (jobs, ledger, tokens); relative "
        "paths are taken from the file's folder.",
        "auth": "Bearer-token auth and optional TLS.",
        "controller": "Where the controller listens.",
        "carbon": "Carbon accounting.",
    },
    "AuthConfig": {
        "enabled": "Require a bearer token on every call (tokens in `<state_dir>/tokens`).",
        "tls": "TLS for the controller's gRPC port (null: plaintext).",
    },
    "TLSConfig": {
        "cert_file": "The controller's certificate, PEM.",
        "key_file": "Its private key, PEM.",
        "ca_file": "CA whose certificates clients must present (null: no client certificates).",
    },
}


def _fence(path: Path) -> str:
    return f"`{path.relative_to(REPO)}`:\n\n```yaml\n{path.read_text().rstrip()}\n```\n"


def cluster_yaml() -> str:
    """docs/cluster-yaml.md."""
    types = [
        "| type | max (TDP) limit W | min limit W | idle W | SM clock MHz | memory MiB |",
        "|---|---|---|---|---|---|",
    ]
    for s in CATALOG.values():
        types.append(
            f"| `{s.name}` | {s.max_power_limit_w:g} | {s.min_power_limit_w:g} | "
            f"{s.idle_power_w:g} | {s.min_sm_clock_mhz}-{s.max_sm_clock_mhz} | "
            f"{s.memory_mib} |"
        )
    policies = ", ".join(f"`{p}`" for p in registered_policies())
    return "\n".join(
        [
            "# cluster.yaml reference",
            "",
            GENERATED_NOTE,
            "",
            "The cluster: nodes and their GPUs (real through NVML, or simulated by type and "
            "count), the power budget and reserve (limits always sum to at most `budget_w - "
            "reserve_w`), the policy, control timing, fail-safe, state, auth and carbon. "
            "Commands take `--config FILE`; without it, `$GREENLLM_CONFIG`, then "
            "`./cluster.yaml`, then the embedded default. `greenllm config check FILE` "
            "validates one.",
            "",
            LOADING,
            "",
            "## GPU types",
            "",
            *types,
            "",
            f"## Policies\n\n{policies}: see [policies.md](policies.md).",
            "",
            "## Keys",
            "",
            model_reference(ClusterConfig, "cluster.yaml (top level)", CLUSTER_KEYS),
            "## Example",
            "",
            _fence(REPO / "cluster.yaml"),
        ]
    )


def job_spec() -> str:
    """docs/job-spec.md."""
    examples = sorted((REPO / "examples" / "jobs").glob("*.yaml"))
    return "\n".join(
        [
            "# Job spec reference",
            "",
            GENERATED_NOTE,
            "",
            "What `greenllm submit JOB.yaml` takes (`greenllm submit ... -- CMD ARGS` is the "
            "quick form for a user's own training script). Work is counted in samples for "
            "training and tokens for inference.",
            "",
            LOADING,
            "",
            "## Keys",
            "",
            model_reference(JobSpec, "job spec (top level)"),
            "## Examples",
            "",
            *(_fence(p) for p in examples),
        ]
    )


def scenario() -> str:
    """docs/scenario.md."""
    from scheduler.sim.scenario import Scenario

    return "\n".join(
        [
            "# Scenario reference",
            "",
            GENERATED_NOTE,
            "",
            "What `greenllm sim SCENARIO.yaml --out DIR` simulates in virtual time with the "
            "controller's own decide(): nodes, the budget and its schedule, jobs, node "
            "failures and the control plane. Outputs: [output-files.md](output-files.md). "
            "Policies, the oracle included: [policies.md](policies.md).",
            "",
            LOADING,
            "",
            "## Keys",
            "",
            model_reference(Scenario, "scenario (top level)"),
            "## Example",
            "",
            _fence(samples.SCENARIO),
        ]
    )


def policies() -> str:
    """docs/policies.md."""
    out = [
        "# Allocation policies",
        "",
        GENERATED_NOTE,
        "",
        "A policy decides, every control period, each GPU's power limit (and for some, a "
        "locked SM clock) so that the limits sum to at most `budget_w - reserve_w`. Name "
        "one in cluster.yaml (`policy`), in a scenario (`policy`), with `greenllm policy set "
        "NAME` on a running cluster, or compare several with `greenllm sim SCENARIO "
        "--compare a,b,oracle`. `greenllm policy list` prints this table.",
        "",
        "| policy | optimises | use it when |",
        "|---|---|---|",
    ]
    names = [*registered_policies(), ORACLE]
    out += [f"| `{n}` | {guide(n).optimises} | {guide(n).when} |" for n in names]
    out.append("")
    for n in names:
        title = "the oracle" if n == ORACLE else n
        out += [f"## {title}", "", guide(n).how, ""]
    missing = sorted(set(registered_policies()) - set(GUIDES))
    if missing:
        out += [f"Not described yet: {', '.join(missing)}.", ""]
    return "\n".join(out)


HAND_KEPT = {
    "up": ["ray_address", "controller_address", "metrics_url", "ray_dashboard", "started_ray",
           "startup_s", "nodes"],
    "demo": ["policy", "warmup_s", "budget", "binding", "cut", "compliance", "training",
             "inference", "phases", "jobs", "wall_s"],
}  # fmt: skip


def cli_json() -> str:
    """docs/cli-json.md."""
    out = [
        "# `--json` documents",
        "",
        GENERATED_NOTE,
        "",
        "Every query command takes `--json` and then prints exactly one JSON document on "
        "stdout (progress and the report for people go to stderr); non-finite numbers are "
        "`null`. Errors are one line on stderr with a non-zero exit, never JSON. Units are in "
        "the key names: `_w` watts, `_j` joules, `_s` seconds, `_mhz` MHz, `_mib` MiB, "
        "`_pct` percent, `_g` grams CO2e. `a[].b` is key `b` of each element of list `a`.",
        "",
    ]
    for command, document in samples.cli_samples().items():
        out += [f"## `greenllm {command} --json`", ""]
        out.append(keys_reference(document, meanings.CLI[command], meanings.CLI_MAPS))
    out += [
        "## `greenllm sim --json`",
        "",
        "The run's summary.json (with `--compare`: `{scenario, policies: {name: summary}}`, "
        "as compare.json): see [output-files.md](output-files.md).",
        "",
    ]
    for command, keys in HAND_KEPT.items():
        out += [f"## `greenllm {command} --json`", "", "Keys (listed by hand, not checked "
                "against the code): " + ", ".join(f"`{k}`" for k in keys) + ".", ""]  # fmt: skip
    return "\n".join(out)


def _columns(header: str, meaning: dict[str, str]) -> list[str]:
    rows = ["| column | meaning |", "|---|---|"]
    return rows + [f"| `{c}` | {meaning.get(c, UNDOCUMENTED)} |" for c in header.split(",")]


def output_files() -> str:
    """docs/output-files.md."""
    summary, trace_header, budget_header, ending = samples.sim_outputs()
    trace = _columns(trace_header, meanings.TRACE)
    budget = _columns(budget_header, meanings.BUDGET)
    return "\n".join(
        [
            "# Output files",
            "",
            GENERATED_NOTE,
            "",
            "## `greenllm sim SCENARIO --out DIR`",
            "",
            f"CSV files are UTF-8 with `{ending}` line endings and a header row. With `--compare "
            "a,b`, DIR holds one such folder per policy, `compare.json` and `compare.png`.",
            "",
            f"### `DIR/trace.csv`\n\nOne row per GPU per recorded step. Header:\n\n"
            f"```\n{trace_header}\n```\n",
            *trace,
            "",
            f"### `DIR/budget.csv`\n\nOne row per change of budget. Header:\n\n"
            f"```\n{budget_header}\n```\n",
            *budget,
            "",
            "### `DIR/summary.json`",
            "",
            keys_reference(summary, meanings.SUMMARY, meanings.SUMMARY_MAPS),
            "## `greenllm compress --out DIR`",
            "",
            "- `DIR/report.json`: the document `greenllm compress --json` prints (see "
            "[cli-json.md](cli-json.md)).",
            "- `DIR/pareto.png`: held-out perplexity against J/token, each model's median with "
            "a bar from its lowest to its highest run, noisy figures hollow, both axes from 0; "
            "the same figures as the table.",
            "- `DIR/<method>/`: each compressed model, loadable, with `greenllm_compression.json`"
            " saying what was done; an inference job can name the folder as its `model`.",
            "",
            "## `greenllm demo --out DIR`",
            "",
            "- `DIR/summary.json`: the document `greenllm demo --json` prints.",
            "- `DIR/samples.json`: the status readings behind it (budget, power, sum of "
            "limits; per job its work, energy, replicas serving and their GPUs' power).",
            "- `DIR/requests.json`: every inference request the demo sent: when, its status, "
            "time to first token, time per output token, tokens.",
            "- `DIR/demo.png`: budget, sum of limits, cluster power and power per job; each "
            "job's throughput; the inference replicas serving and each request's time to "
            "first token against the SLO, over time, the cut shaded.",
            "",
        ]
    )


def documents() -> dict[str, str]:
    """Every generated reference, by file name under docs/."""
    return {
        "cluster-yaml.md": cluster_yaml(),
        "job-spec.md": job_spec(),
        "scenario.md": scenario(),
        "policies.md": policies(),
        "cli-json.md": cli_json(),
        "output-files.md": output_files(),
    }


def main(argv: list[str]) -> int:
    """Write docs/ (or, with ``--check``, report the files that differ)."""
    check = "--check" in argv
    stale = []
    for name, text in documents().items():
        path = DOCS / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not check:
            DOCS.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
    what = "differ from the code" if check else "written"
    print(f"docs/: {', '.join(stale) or 'nothing'} {what}", file=sys.stderr)
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
