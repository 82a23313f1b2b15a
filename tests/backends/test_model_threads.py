"""How the in-process backend spreads work over the CPUs: TensorFlow's intra-op threads
(INTRA_OP_THREADS) and the model calls that run at once (MODEL_CALLS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from functions import config
from functions.answers.classify import top_classes
from functions.config import ConfigError, Settings


@pytest.mark.parametrize(("cpus", "threads", "calls"), [(1, 1, 2), (2, 1, 4), (4, None, 8)])
def test_the_defaults_follow_the_cpus_the_process_may_use(monkeypatch, cpus, threads, calls):
    monkeypatch.setattr(config, "usable_cpus", lambda: cpus)
    settings = Settings.from_env({})
    assert settings.intra_op_thread_count() == threads  # None: TensorFlow's own default
    assert settings.model_call_count() == calls


def test_set_values_win_over_the_defaults(monkeypatch):
    monkeypatch.setattr(config, "usable_cpus", lambda: 2)
    settings = Settings.from_env({"INTRA_OP_THREADS": "2", "MODEL_CALLS": "1"})
    assert (settings.intra_op_thread_count(), settings.model_call_count()) == (2, 1)


def test_tensorflows_own_variable_is_honoured_when_ours_is_unset(monkeypatch):
    monkeypatch.setattr(config, "usable_cpus", lambda: 2)
    assert Settings.from_env({"TF_NUM_INTRAOP_THREADS": "3"}).intra_op_thread_count() == 3
    both = Settings.from_env({"TF_NUM_INTRAOP_THREADS": "3", "INTRA_OP_THREADS": "2"})
    assert both.intra_op_thread_count() == 2


@pytest.mark.parametrize("name", ["INTRA_OP_THREADS", "MODEL_CALLS"])
@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_bad_values_are_refused_with_the_variable_named(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_usable_cpus_is_this_process_affinity():
    assert config.usable_cpus() == len(os.sched_getaffinity(0))


def test_top_classes_is_exactly_a_stable_full_sort_on_generated_scores():
    rng = np.random.default_rng(7)
    for trial in range(3000):
        n = int(rng.integers(1, 1200))
        k = int(rng.integers(1, min(n, 20) + 1))
        kind = trial % 4
        if kind == 0:
            scores = rng.random(n).astype(np.float32)
        elif kind == 1:  # many ties, at the k-th score too
            scores = rng.integers(0, 4, n).astype(np.float32)
        elif kind == 2:  # NaN from a broken model
            scores = rng.random(n).astype(np.float32)
            scores[rng.random(n) < 0.3] = np.nan
        else:
            scores = np.round(rng.random(n), 2).astype(np.float32)
        expected = np.argsort(-scores, kind="stable")[:k].tolist()
        assert top_classes(scores, k) == expected, (trial, n, k)


@pytest.mark.slow
@pytest.mark.parametrize(("env", "expected"), [({"INTRA_OP_THREADS": "3"}, 3),
                                                ({"TF_NUM_INTRAOP_THREADS": "2"}, 2)])
def test_the_backend_gives_tensorflow_the_threads_before_loading(demo_model, env, expected):
    script = ("import json, tensorflow as tf\n"
              "from functions.backends.factory import create_backend\n"
              "from functions.config import Settings\n"
              "backend = create_backend(Settings.from_env())\n"
              "print(json.dumps({'threads': tf.config.threading"
              ".get_intra_op_parallelism_threads(), 'calls': backend.calls}))\n")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("INTRA_OP_THREADS", "TF_NUM_INTRAOP_THREADS", "MODEL_CALLS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**clean, "MODEL_URI": str(demo_model.served),
                               "TF_CPP_MIN_LOG_LEVEL": "3", "MODEL_CALLS": "3", **env},
                          timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"threads": expected,
                                                               "calls": 3}
