"""Shared test helpers: tiny model sizes, the small training config, and CLI launchers.

Tests run on the CPU, one device, float32. Every test that trains uses :data:`SIZES`, so
the compiled programs are shared across the whole session (one compile key), and every
subprocess shares one persistent XLA compilation cache (:func:`xla_cache`).
"""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from jaxbasics.tasks.prior.config import PriorConfig  # noqa: E402
from jaxbasics.tasks.vqvae.config import VQVAEConfig  # noqa: E402
from jaxbasics.tasks.vqvae.presets import preset  # noqa: E402
from jaxbasics.tasks.vqvae.train import VQVAETask, init_state, structure, to_model  # noqa: E402
from jaxbasics.train import cli, fit, loop, read_run  # noqa: E402
from jaxbasics.train.sharding import placed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
TRAIN = str(EXPERIMENTS / "train_vqvae.py")
EVALUATE = str(EXPERIMENTS / "evaluate.py")
# experiments/ holds the PyTorch reference and the CLI scripts the tests import or run.
sys.path.insert(0, str(EXPERIMENTS))

# Property tests draw the same examples on every run: CI results don't depend on luck.
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.load_profile("deterministic")

# The tiny model every training test uses: 8x8 latents of 8 dims, 16 codes.
SIZES = dict(
    num_hiddens=16,
    num_residual_hiddens=4,
    num_residual_layers=2,
    embedding_dim=8,
    num_embeddings=16,
)

# A 10-step run on 64 shapes images, in batches of 8: the config of the in-process tests.
# Constant learning rate: the tests stop, extend and shorten runs, which a cosine schedule
# (the quickstart's) refuses; tests/test_train_loop.py tests the cosine path itself.
RUN = dict(
    lr_schedule="constant",
    warmup_steps=0,
    batch_size=8,
    num_train_examples=64,
    num_eval_examples=12,
    num_training_updates=10,
    checkpoint_every=5,
    log_every=5,
    eval_every=5,
    progress=False,
)


def small_config(**overrides):
    """The quickstart preset at :data:`SIZES` and :data:`RUN`, with ``overrides``."""
    return preset("quickstart", **{**SIZES, **RUN, **overrides})


def cli_flags(**overrides) -> list[str]:
    """:func:`small_config`'s values as train_vqvae.py flags (40 steps, eval every 20)."""
    values = {**SIZES, **RUN, "num_training_updates": 40, "eval_every": 20, **overrides}
    flags = ["--preset", "quickstart"]
    for name, value in values.items():
        flags += [
            "--" + name.replace("_", "-"),
            str(value).lower() if isinstance(value, bool) else str(value),
        ]
    return flags


@pytest.fixture(scope="session", autouse=True)
def xla_cache(tmp_path_factory):
    """One persistent XLA cache for the whole session, shared by the test workers and every
    subprocess they start: a program one of them compiled, the others load."""
    import jax

    # The workers' temp folders (.../pytest-N/popen-gwK) share their parent.
    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if base.name.startswith("popen-") else base) / "xla_cache"
    cache.mkdir(exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return str(cache)


def cli_env(devices: int = 1, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: CPU, ``devices`` simulated devices."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(devices),
        # Every program into the session's cache (xla_cache), small ones too: later runs load it.
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **extra,
    }


def train_cmd(workdir, cache, *extra: str, **overrides) -> list[str]:
    """The train_vqvae.py command line of a tiny run in ``workdir``."""
    return [
        sys.executable,
        TRAIN,
        *cli_flags(**overrides),
        "--workdir",
        str(workdir),
        "--compilation-cache",
        cache,
        *extra,
    ]


def main_in_process(script, argv: list[str], capsys) -> tuple[int, str, str]:
    """A training script's ``main`` (``train_vqvae`` or ``train_prior``) run in this process on
    ``argv``, as its command line would: ``(exit code, stdout, stderr)``. For flags and
    refusals, where a new interpreter would cost more than the check; the signal, lock and
    resume tests run the scripts as subprocesses, as users do."""
    logger = logging.getLogger("jaxbasics")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    capsys.readouterr()
    try:
        code = cli.main(script.SCRIPT, [*argv, "--compilation-cache", ""])
    except SystemExit as e:
        code = e.code
    finally:  # pytest's log capture (caplog) needs the logger as it was
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)
    out = capsys.readouterr()
    return code, out.out, out.err


def run(cmd: list[str], timeout: float = 600, env: dict | None = None):
    """Run ``cmd`` to completion from the repository root; stdout and stderr captured apart."""
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env or cli_env()
    )


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in the background, stderr merged into stdout."""
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env or cli_env(),
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Poll ``predicate`` until it holds; fail if ``proc`` ends first or time runs out."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended early:\n{proc.stdout.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out waiting for the run to progress")


def checkpoint_steps(workdir) -> list[int]:
    """Steps of the finished checkpoints in ``workdir``."""
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def restore(workdir):
    """The newest readable checkpoint of the VQ-VAE run in ``workdir``, all of it."""
    return read_run(
        workdir,
        VQVAEConfig,
        lambda config, meta: placed(structure(config).abstract),
        items=("state", "meta", "data_iter"),
        migratable=VQVAETask.migratable,
    )


@pytest.fixture(scope="session")
def tiny_model():
    """A :class:`~jaxbasics.vqvae.model.VQVAE` at :data:`SIZES` (plain VQ), in eval mode."""
    config = small_config(decay=0.0)
    state = init_state(config)
    return to_model(config, state.params, state.ema)


TRAINED_STEPS = 10


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """The workdir of a finished run of ``small_config(num_training_updates=TRAINED_STEPS)``,
    shared read-only by the tests that load, export, encode or reconstruct a trained model."""
    workdir = tmp_path_factory.mktemp("trained_run")
    fit(small_config(num_training_updates=TRAINED_STEPS), workdir)
    return workdir


PRIOR_STEPS = 12


def prior_config(model, **overrides):
    """A tiny prior over ``model``'s codes: 12 steps in batches of 8, evaluated at 6 and 12."""
    values = dict(
        model=str(model),
        dim=16,
        depth=1,
        heads=2,
        channels=8,
        num_layers=3,
        batch_size=8,
        num_training_updates=PRIOR_STEPS,
        learning_rate=1e-2,
        log_every=4,
        eval_every=6,
        checkpoint_every=6,
        progress=False,
    )
    return PriorConfig(**{**values, **overrides})


@pytest.fixture(scope="session")
def prior_workdir(workdir, tmp_path_factory):
    """The workdir of a finished tiny class-conditional transformer prior over the codes of
    :func:`workdir`'s model, shared read-only by the prior's tests."""
    prior = tmp_path_factory.mktemp("prior_run")
    fit(prior_config(workdir), prior)
    return prior


@pytest.fixture(scope="session")
def maskgit_workdir(workdir, tmp_path_factory):
    """The workdir of a finished tiny class-conditional masked prior (MaskGIT) over the codes
    of :func:`workdir`'s model, shared read-only."""
    prior = tmp_path_factory.mktemp("maskgit_run")
    fit(prior_config(workdir, prior="maskgit"), prior)
    return prior


# judge.py flags for a tiny judge: it judges badly; the tests check bookkeeping, not skill.
JUDGE_FLAGS = ["--steps", "200", "--num-train", "5000", "--num-test", "20"]


@pytest.fixture(scope="session")
def tiny_judge(tmp_path_factory):
    """A judge folder trained for a few steps on 5,000 shapes images, shared read-only."""
    import judge

    folder = tmp_path_factory.mktemp("judge")
    assert judge.main(["--judge", str(folder), *JUDGE_FLAGS]) == 0
    return folder


def interrupt_after(monkeypatch, calls: int) -> None:
    """Make fit() stop as if Ctrl-C had been pressed during the step of the ``calls``-th
    ``global_batch`` call (one per array a step places: a VQ-VAE step places one, a prior's
    two, codes and labels; the k-means init places its own)."""
    count = []

    def batch_then_signal(local, sharding):
        count.append(1)
        if len(count) == calls:
            signal.raise_signal(signal.SIGINT)  # fit's handler: stop after this step
        return jax.make_array_from_process_local_data(sharding, local)

    monkeypatch.setattr(loop, "global_batch", batch_then_signal)
