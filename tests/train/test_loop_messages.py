"""The outer loop's console lines: global steps described with the training phase's own count, and
a restart that finds a finished run says so instead of "resuming"."""
import logging

import numpy as np

from jaxrl_self.train.faults import describe_step
from jaxrl_self.train.loop import format_scalars, log_restored


def test_describe_step_counts_training_steps_from_one():
    assert describe_step(3, 100) == "step 3 (SFT step 3 of 100)"
    assert describe_step(105, 100) == "step 105 (training step 5 after 100 SFT steps)"
    assert describe_step(5, 0) == "step 5"


def test_a_restart_says_whether_it_resumes_or_found_a_finished_run(caplog):
    with caplog.at_level(logging.INFO, logger="jaxrl_self.train.loop"):
        log_restored(105, {"phase": "rl", "rl_step": 5}, num_steps=10, sft_steps=100, directory="w/checkpoints")
        log_restored(110, {"phase": "rl", "rl_step": 10}, num_steps=10, sft_steps=100, directory="w/checkpoints")
        log_restored(40, {"phase": "sft"}, num_steps=10, sft_steps=100, directory="w/checkpoints")
    resumed, finished, sft = caplog.messages
    assert resumed == "resuming from the checkpoint at step 105 (training step 5 after 100 SFT steps) in w/checkpoints"
    assert finished.startswith("the run already finished at step 110 (training step 10 after 100 SFT steps)")
    assert "nothing left to train" in finished and "resuming" not in finished
    assert sft == "resuming from the checkpoint at step 40 (SFT step 40 of 100) in w/checkpoints"


def test_format_scalars_leaves_out_arrays_and_strings():
    assert format_scalars({"eval/accuracy": np.float32(0.8125), "eval/format_ok": 1, "histogram": np.ones(3),
                           "note": "x"}) == "eval/accuracy=0.8125 eval/format_ok=1"
