#!/usr/bin/env bash
# One short check of jaxbasics on a machine with one NVIDIA GPU; prints JSON lines.
#
#   bash experiments/device_check.sh            # about 5 minutes on one H100 or H200
#
# 1. the device and the library versions;
# 2. the training step against the PyTorch reference on the same GPU, batch 32 and 256, eager
#    and under torch.compile (compile time, peak device memory of both, images/s, FLOP rate);
# 3. the same step with the CPU-fast convolution forms, and in bfloat16;
# 4. the training loop with a host sync per step against the loop that fit() runs;
# 5. sampling the cifar10 transformer prior preset, 1 and 64 code maps a call, against its
#    PyTorch twin (eager, and under torch.compile), after a greedy check that both agree;
# 6. a 2,000-step quickstart run on the embedded shapes data, float32 and bfloat16: its test
#    recon error, perplexity, codes used and wall time.
# Stages 2-5 run in one process (benchmark.py --check).
# Needs the project installed (pip install -e '.[torch]') with a CUDA build of jax and torch;
# installs nothing itself. DEVICE_CHECK_QUICK=1 shrinks every stage to a smoke test (the
# test suite runs it that way on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX and PyTorch share the card in the benchmark: leave PyTorch half of it.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}

python3 - <<'PY'
import json, platform
import jax, flax, optax, orbax.checkpoint as ocp
try:
    import torch
    t = {"torch": torch.__version__, "torch_cuda": torch.cuda.is_available()}
except ImportError:
    t = {"torch": None}
d = jax.devices()[0]
print(json.dumps({"check": "device", "platform": d.platform, "device_kind": d.device_kind,
                  "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                  "orbax": ocp.__version__, "python": platform.python_version(), **t}))
PY

if [ "${DEVICE_CHECK_QUICK:-0}" = 1 ]; then
  sizes=(--batch 4 --quick --small --prior-batch 4); steps=20
else
  sizes=(--batch 32,256 --steps 20 --prior-batch 1,64); steps=2000
fi
cuda=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo none)
# The full check also times PyTorch under torch.compile, the stronger peer (its compile is slow).
compile=(); [ "${DEVICE_CHECK_QUICK:-0}" = 1 ] || compile=(--torch-compile)
if [ "$cuda" = none ]; then peer=(--no-torch); else peer=(--torch-device "$cuda" "${compile[@]}"); fi
# Stages 2-5 in one process: the step against PyTorch, im2col, bfloat16, the loop, the prior.
timeout 600 python3 experiments/benchmark.py --check "${sizes[@]}" "${peer[@]}"

STEPS=$steps QUICK=${DEVICE_CHECK_QUICK:-0} python3 - <<'PY'
import json, os, subprocess, sys, tempfile, time
steps = os.environ["STEPS"]
# The smoke test trains the tests' tiny model on a few images: the path, not the numbers.
tiny = ["--num-hiddens", "16", "--num-residual-hiddens", "4", "--embedding-dim", "8",
        "--num-embeddings", "16", "--num-train-examples", "256", "--num-eval-examples", "64",
        "--kmeans-init-steps", "1"] if os.environ["QUICK"] == "1" else []
for dtype in ("float32", "bfloat16"):
    workdir = tempfile.mkdtemp()
    cmd = [sys.executable, "experiments/train_vqvae.py", "--preset", "quickstart",
           "--num-training-updates", steps, "--eval-every", steps, "--progress", "false",
           "--compute-dtype", dtype, "--workdir", workdir, "--compilation-cache", "", *tiny]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    line = {"check": f"shapes_{steps}_steps", "compute_dtype": dtype,
            "wall_s": round(time.perf_counter() - t, 1), "returncode": r.returncode}
    if r.returncode == 0:
        line.update(json.loads(r.stdout.strip().splitlines()[-1]))
    else:
        line["stderr_tail"] = r.stderr[-2000:]
    print(json.dumps(line), flush=True)
PY
