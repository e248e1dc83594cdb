#!/usr/bin/env bash
# NVML acceptance test for an operator, on a GPU machine of their own. It CHANGES the GPU's
# power limit, locked clocks and persistence mode (and puts back what it found at the end),
# so run it only where that is allowed and no job uses the GPU.
#
#   sudo scripts/nvml-acceptance.sh [NVML_INDEX]        (default GPU 0)
#   env: PY=python with greenllm's dependencies (default: .venv/bin/python, else python3)
#        GREENLLM=greenllm CLI (default: .venv/bin/greenllm, else greenllm on PATH)
#
# What it checks, each step printing what is expected and what it saw:
#   1 an explicit stop restores the limit in force BEFORE greenllm (an operator's own cap),
#     not the default, and frees the clocks greenllm locked;
#   2 a plain exit, 3 SIGTERM (what Ray and systemd send) and 4 kill -9 leave greenllm's cap
#     in place (the controller still counts the node capped), and scripts/gpu_restore.py
#     puts back the operator's limit from the record greenllm left;
#   5 `greenllm profile --gpu` restores on a normal exit and 6 on SIGTERM (exit status 143);
#   7 persistence mode on: a cap outlives its process; 8 persistence mode off: the driver may
#     drop the GPU's state once no process holds it (informational), the record still
#     restores the operator's limit;
#   9 without privilege, the error is one line naming examples/systemd/greenllm-agent.service.
# Exit status: the number of failed steps (0: all passed). Needs root (or CAP_SYS_ADMIN),
# nvidia-smi, nvidia-ml-py; steps 5-6 also torch with CUDA and the greenllm CLI.
set -uo pipefail

GPU="${1:-0}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$([ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3)}"
GREENLLM="${GREENLLM:-$([ -x "$REPO/.venv/bin/greenllm" ] && echo "$REPO/.venv/bin/greenllm" || echo greenllm)}"
STATE="$(mktemp -d /tmp/greenllm-acceptance.XXXXXX)"
HELPER="$STATE/hold.py"
FAILS=0

die() { echo "nvml-acceptance: $*" >&2; exit 100; }
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this needs a machine with an NVIDIA GPU and driver"
nvidia-smi -i "$GPU" -L >/dev/null 2>&1 || die "no NVIDIA GPU $GPU here (nvidia-smi -L lists them)"
"$PY" -c "import pynvml" 2>/dev/null || die "$PY cannot import pynvml (pip install nvidia-ml-py)"
[ "$(id -u)" = 0 ] || echo "note: not root; setting limits needs CAP_SYS_ADMIN" >&2

q() { nvidia-smi -i "$GPU" --query-gpu="$1" --format=csv,noheader,nounits | tr -d ' '; }
eq() { awk -v a="$1" -v b="$2" 'BEGIN { exit !((a - b) < 0.5 && (b - a) < 0.5) }'; }
step() { echo; echo "== STEP $1: $2"; echo "   expected: $3"; }
verdict() {  # verdict OK|FAIL|INFO observed...
  local v="$1"; shift; echo "   observed: $*"; echo "   -> $v"
  [ "$v" = FAIL ] && FAILS=$((FAILS + 1)); return 0
}
record() { ls "$STATE"/gpu-restore/*.json >/dev/null 2>&1 && echo present || echo absent; }
restore() { "$PY" "$REPO/scripts/gpu_restore.py" --state-dir "$STATE" | sed 's/^/   /'; }
idle_clock() { sleep 3; q clocks.sm; }

ORIG_LIMIT="$(q power.limit)"; DEFAULT="$(q power.default_limit)"
MIN="$(q power.min_limit)"; MAX="$(q power.max_limit)"; ORIG_PM="$(q persistence_mode)"
CLOCKS="$(nvidia-smi -i "$GPU" --query-supported-clocks=graphics --format=csv,noheader,nounits | sort -n -u)"
LOCK="$(echo "$CLOCKS" | awk '{ c[NR] = $1 } END { print c[int(NR * 3 / 4) + 1] }')"
OP="$(awk -v lo="$MIN" -v hi="$MAX" 'BEGIN { printf "%d", (lo + hi) / 2 }')"    # the operator's cap
CAP="$(awk -v lo="$MIN" -v op="$OP" 'BEGIN { printf "%d", lo + (op - lo) / 2 }')" # greenllm's cap

cleanup() {
  echo; echo "== cleanup: back to what was found (limit $ORIG_LIMIT W, persistence $ORIG_PM)"
  [ -n "${BG:-}" ] && kill -9 "$BG" 2>/dev/null
  nvidia-smi -i "$GPU" -rgc >/dev/null 2>&1
  nvidia-smi -i "$GPU" -pm "$([ "$ORIG_PM" = Enabled ] && echo 1 || echo 0)" >/dev/null 2>&1
  nvidia-smi -i "$GPU" -pl "$ORIG_LIMIT" >/dev/null 2>&1
  rm -rf "$STATE"
}
trap cleanup EXIT

cat >"$HELPER" <<'EOF'
"""hold.py NVML_INDEX STATE LIMIT_W LOCK_MHZ MODE: greenllm caps the GPU, then by MODE
restore (explicit stop) | exit (plain exit) | wait (until a signal)."""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[6])
from greenllm.devices.nvml import NVMLGPU
from greenllm.errors import GreenllmError
index, state, limit_w, lock, mode = int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
gpu = NVMLGPU(index, power_poll_interval_s=None, restore_dir=state / "gpu-restore")
try:
    gpu.set_power_limit_w(limit_w)
    gpu.lock_sm_clocks_mhz(lock, lock)
except GreenllmError as err:
    print(err, file=sys.stderr); sys.exit(3)
print("capped", flush=True)
if mode == "restore":
    gpu.restore_defaults()
elif mode == "wait":
    while True:
        time.sleep(1)
gpu.close()
EOF
hold() { "$PY" "$HELPER" "$GPU" "$STATE" "$CAP" "$LOCK" "$1" "$REPO"; }

echo "GPU $GPU: $(q name) $(q uuid)"
echo "limits: default $DEFAULT W, range [$MIN, $MAX] W, now $ORIG_LIMIT W; persistence $ORIG_PM"
echo "plan: operator cap $OP W, greenllm cap $CAP W, clock lock $LOCK MHz"
nvidia-smi -i "$GPU" -pm 1 >/dev/null || die "cannot set persistence mode (root needed)"
nvidia-smi -i "$GPU" -pl "$OP" >/dev/null || die "cannot set the operator cap $OP W (root needed)"

step 1 "greenllm caps, then is stopped on purpose (restore_defaults)" \
  "limit back to the operator's $OP W (not the default $DEFAULT W); idle SM clock below $LOCK MHz"
hold restore >/dev/null; L="$(q power.limit)"; C="$(idle_clock)"
eq "$L" "$OP" && [ "$C" -lt "$LOCK" ] && verdict OK "limit $L W, idle clock $C MHz" || verdict FAIL "limit $L W, idle clock $C MHz"

step 2 "greenllm caps, then the process exits without a stop" \
  "cap $CAP W stays, restore record present; gpu_restore.py then brings back $OP W"
hold exit >/dev/null; L="$(q power.limit)"; R="$(record)"
eq "$L" "$CAP" && [ "$R" = present ] && verdict OK "limit $L W, record $R" || verdict FAIL "limit $L W, record $R"
restore; L="$(q power.limit)"
eq "$L" "$OP" && verdict OK "after gpu_restore.py: $L W" || verdict FAIL "after gpu_restore.py: $L W"

for sig in TERM KILL; do
  n=$([ $sig = TERM ] && echo 3 || echo 4)
  step $n "greenllm holds a cap and receives SIG$sig (Ray/systemd stop, or a crash)" \
    "cap $CAP W stays, record present; gpu_restore.py then brings back $OP W"
  coproc HOLD { exec "$PY" "$HELPER" "$GPU" "$STATE" "$CAP" "$LOCK" wait "$REPO"; }
  BG=$HOLD_PID; read -r _ <&"${HOLD[0]}"  # "capped"
  kill -s $sig "$BG"; wait "$BG" 2>/dev/null; BG=""
  L="$(q power.limit)"; R="$(record)"
  eq "$L" "$CAP" && [ "$R" = present ] && verdict OK "limit $L W, record $R" || verdict FAIL "limit $L W, record $R"
  restore; L="$(q power.limit)"
  eq "$L" "$OP" && verdict OK "after gpu_restore.py: $L W" || verdict FAIL "after gpu_restore.py: $L W"
done

if command -v "$GREENLLM" >/dev/null && "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  step 5 "greenllm profile --gpu $GPU --power-limits $CAP:$CAP:1 runs and exits normally" \
    "exit 0; limit back to $OP W"
  "$GREENLLM" profile --gpu "$GPU" --workload train --power-limits "$CAP:$CAP:1" --warmup-s 1 --measure-s 2 >/dev/null
  S=$?; L="$(q power.limit)"
  [ $S = 0 ] && eq "$L" "$OP" && verdict OK "exit $S, limit $L W" || verdict FAIL "exit $S, limit $L W"

  step 6 "greenllm profile --gpu $GPU --sm-clocks $LOCK:$LOCK:15 receives SIGTERM mid-run" \
    "exit 143; limit back to $OP W; idle SM clock below $LOCK MHz"
  # Baseline (limit raised to the maximum, clocks free) for ~11 s, then the lock for ~11 s.
  "$GREENLLM" profile --gpu "$GPU" --workload train --sm-clocks "$LOCK:$LOCK:15" --warmup-s 1 --measure-s 10 >/dev/null 2>&1 &
  BG=$!
  for _ in $(seq 60); do eq "$(q power.limit)" "$MAX" && break; sleep 1; done
  sleep 16; echo "   during the run: limit $(q power.limit) W, SM clock $(q clocks.sm) MHz (locked: $LOCK)"
  kill -TERM "$BG"; wait "$BG"; S=$?; BG=""
  L="$(q power.limit)"; C="$(idle_clock)"
  [ $S = 143 ] && eq "$L" "$OP" && [ "$C" -lt "$LOCK" ] && verdict OK "exit $S, limit $L W, idle clock $C MHz" \
    || verdict FAIL "exit $S, limit $L W, idle clock $C MHz"
else
  echo; echo "== STEPS 5-6 skipped: need $GREENLLM and torch with CUDA"
fi

step 7 "persistence mode ON: greenllm caps, exits without a stop; wait 5 s" \
  "cap $CAP W stays (the driver keeps the GPU's state)"
nvidia-smi -i "$GPU" -pm 1 >/dev/null; hold exit >/dev/null; sleep 5; L="$(q power.limit)"
eq "$L" "$CAP" && verdict OK "limit $L W" || verdict FAIL "limit $L W"
restore >/dev/null

step 8 "persistence mode OFF: greenllm caps, exits without a stop; wait 5 s" \
  "either the cap $CAP W or the default $DEFAULT W (the driver may reset a GPU no process holds: run nvidia-persistenced or persistence mode on in production); gpu_restore.py brings back $OP W"
nvidia-smi -i "$GPU" -pm 0 >/dev/null; hold exit >/dev/null; sleep 5; L="$(q power.limit)"
verdict INFO "limit $L W"
restore; L="$(q power.limit)"
eq "$L" "$OP" && verdict OK "after gpu_restore.py: $L W" || verdict FAIL "after gpu_restore.py: $L W"
nvidia-smi -i "$GPU" -pm 1 >/dev/null

if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  step 9 "an unprivileged user asks greenllm to cap" \
    "exit 3 and one line naming examples/systemd/greenllm-agent.service; limit unchanged ($OP W)"
  OUT="$(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$PY" "$HELPER" "$GPU" /tmp "$CAP" "$LOCK" exit "$REPO" 2>&1)"
  S=$?; L="$(q power.limit)"
  [ $S = 3 ] && grep -q "greenllm-agent.service" <<<"$OUT" && eq "$L" "$OP" \
    && verdict OK "exit $S: $OUT" || verdict FAIL "exit $S: $OUT (limit $L W)"
fi

echo; echo "== $FAILS step(s) failed"
exit "$FAILS"
