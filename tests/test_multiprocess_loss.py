"""Two processes train exactly as one process with twice the batch: same logged loss, same weights.

transformers 5's Trainer (``average_tokens_across_devices`` on by default) multiplies the loss by the number of
processes whenever the model's ``forward`` takes ``**kwargs``, assuming it was divided by the labels of all
processes; the models' own losses are a per-process mean, so two processes logged twice the loss and trained with
twice the gradient. Every recipe now hands Trainer a loss divided by that global count (shared/training/imbalance.py,
shared/ner/crf.py).

Each case trains a tiny model with ``--dropout 0`` on a training set that fits one batch (2 processes x b =
1 process x 2b = every example, an even number so DistributedSampler repeats none), so every step sees the same
examples whatever the order. Plain SGD without gradient clipping: an update is the gradient times the learning
rate, so a gradient off by a factor shows in the weights (Adam would normalise the factor away).
"""

from __future__ import annotations

import ast
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.core.runner import run_recipe
from tests.helpers import ASSERTION_SAMPLE, IMAGE_SAMPLE, NER_SAMPLE, ROOT, TEXT_SAMPLE, ner_sample_corpus
from tests.test_multiprocess import free_port

# Tolerance: |w(2 processes) - w(1 process)| summed over all weights, relative to how far training moved them
# |w(1 process) - w(initial)|. Float32 sums in another order leave ~1e-7; a loss off by the number of processes
# gives ~1 (the update doubles).
WEIGHT_TOLERANCE = 1e-3
STEPS = 3
SGD = ["--optim", "sgd", "--max_grad_norm", "0", "--lr_scheduler_type", "constant", "--warmup_steps", "0",
       "--max_steps", str(STEPS), "--logging_steps", "1", "--bf16", "false", "--seed", "3", "--do_train",
       "--save_strategy", "no", "--dropout", "0"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """name -> (task, arguments, per-process batch size b): b x 2 examples in all."""
    from shared.training.tiny_models import build_tiny_bert, build_tiny_vit

    root = tmp_path_factory.mktemp("loss_scale")
    with (TEXT_SAMPLE / "train.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    bert = str(build_tiny_bert(root / "bert", [r["text"] for r in rows]))
    # 16 notes, imbalanced (8/4/2/2) so that class weighting changes the loss
    wanted = {"cardiology": 8, "respiratory": 4, "gastroenterology": 2, "neurology": 2}
    picked = [r for label, n in wanted.items() for r in [r for r in rows if r["label"] == label][:n]]
    text = root / "train.csv"
    with text.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(picked)
    ner_bert = str(build_tiny_bert(root / "ner_bert", ner_sample_corpus(), vocab_size=300,
                                   max_position_embeddings=128))
    vit = build_tiny_vit(root / "vit")
    images = root / "images"  # 10 normal, 6 opacity
    for label, n in (("normal", 10), ("opacity", 6)):
        (images / label).mkdir(parents=True)
        for path in sorted((IMAGE_SAMPLE / "folders" / "train" / label).iterdir())[:n]:
            shutil.copy(path, images / label / path.name)
    text_args = ["--model_name_or_path", bert, "--train_file", text, "--learning_rate", "2"]
    ner_args = ["--model_name_or_path", ner_bert, "--train_file", NER_SAMPLE / "train", "--max_train_samples", "16",
                "--max_seq_length", "128", "--learning_rate", "2"]
    return {
        # (named: 8/4/2/2 would otherwise turn class weighting on, shared/training/adaptive.py)
        "text": ("text_classification", [*text_args, "--class_weighting", "none"], 8),
        "ner_weighted": ("ner", [*ner_args, "--class_weighting", "balanced"], 10),  # 16 sentences: 20 windows
        "ner_crf": ("ner", [*ner_args, "--use_crf"], 10),
        "image_weighted": ("image_classification", ["--model_name_or_path", vit, "--train_dir", images,
                                                    "--learning_rate", "2", "--class_weighting", "balanced"], 8),
        "assertion": ("assertion_status", ["--model_name_or_path", bert, "--train_file", ASSERTION_SAMPLE / "train",
                                           "--max_train_samples", "16", "--learning_rate", "2",
                                           "--class_weighting", "none"], 8),
    }


def logged_losses(output: str) -> list[float]:
    """The training loss Trainer logs at each step (its ``{'loss': ...}`` lines)."""
    return [float(ast.literal_eval(line)["loss"]) for line in output.splitlines() if line.startswith("{'loss'")]


def weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    found = {}
    for name in ("model.safetensors", "crf.safetensors"):
        if (folder / name).exists():
            found.update({f"{name}:{k}": v for k, v in load_file(folder / name).items()})
    return found


def relative_difference(a: dict, b: dict, start: dict) -> float:
    assert sorted(a) == sorted(b)
    moved = sum(np.abs(a[k] - start[k]).sum() for k in a if k in start)
    return sum(np.abs(a[k] - b[k]).sum() for k in a) / moved


# Unweighted: text, assertion (its Trainer is built in shared/training/trainer.py), the CRF head; weighted: NER, images.
@pytest.mark.multiprocess
@pytest.mark.parametrize("name", ["text", "ner_weighted", "ner_crf", "image_weighted", "assertion"])
def test_two_processes_train_as_one_with_twice_the_batch(name, cases, tmp_path, capfd):
    task, args, batch = cases[name]
    args = [*map(str, args), *SGD]

    start = tmp_path / "start"  # the initial weights: trained for 0 steps, same seed
    run_recipe(task, [*args, "--output_dir", start, "--per_device_train_batch_size", str(2 * batch),
                      "--max_steps", "1", "--learning_rate", "0"])
    one = tmp_path / "one"
    capfd.readouterr()
    run_recipe(task, [*args, "--output_dir", one, "--per_device_train_batch_size", str(2 * batch)])
    captured = capfd.readouterr()
    losses_one = logged_losses(captured.out + captured.err)

    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(ROOT / "recipes" / task / "train.py"), *args, "--output_dir", str(two),
                           "--per_device_train_batch_size", str(batch), "--use_cpu", "true"],
                          check=False, capture_output=True, text=True, timeout=400, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses_two = logged_losses(proc.stdout + proc.stderr)

    assert len(losses_one) == len(losses_two) == STEPS
    assert losses_two == pytest.approx(losses_one, rel=2e-3)  # logged with 4 significant digits
    start_weights, one_weights = weights(start), weights(one)
    assert relative_difference(weights(two), one_weights, start_weights) < WEIGHT_TOLERANCE


def test_label_smoothing_is_trainers_own():
    """The recipes' loss replaces Trainer's, so ``--label_smoothing_factor`` is applied there, as ``LabelSmoother``
    does (token labels with -100 included; multi-label: per label, which Trainer's could not do)."""
    import torch
    from transformers.trainer_pt_utils import LabelSmoother

    from shared.training.imbalance import training_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 4), torch.tensor([[0, 1, -100, 3, 2], [2, -100, -100, 1, 0]])
    ours = training_loss(np.array([0, 1, 2, 3]), 4, "none", label_smoothing=0.1)({"logits": logits}, labels)
    assert ours.item() == pytest.approx(LabelSmoother(0.1)({"logits": logits}, labels).item(), rel=1e-6)
    # multi-label: every label is the two-class problem softmax([0, z]) = (1 - sigmoid(z), sigmoid(z)), smoothed so
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    z = torch.randn(2, 3)
    ours = training_loss(multi_hot.numpy(), 3, "none", multi_label=True, label_smoothing=0.1)({"logits": z}, multi_hot)
    two_class = torch.stack([torch.zeros_like(z), z], dim=-1)
    expected = LabelSmoother(0.1)({"logits": two_class}, multi_hot.long())
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)


def test_crf_with_label_smoothing_is_a_one_line_error(cases, tmp_path, capsys):
    """Trainer's label smoothing would replace the CRF likelihood by cross-entropy on the emissions."""
    from tests.helpers import run_in_process

    _, args, _ = cases["ner_crf"]
    status, err = run_in_process("ner", [*map(str, args), "--do_train", "--label_smoothing_factor", "0.1",
                                         "--output_dir", str(tmp_path / "out")], capsys)
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("error: --use_crf trains on the CRF likelihood; it cannot be combined with "
                                            "--class_weighting, --focal_gamma or --label_smoothing_factor")
    assert not (tmp_path / "out").exists()


def test_gradient_accumulation_trains_as_the_whole_batch(cases, tmp_path):
    """One process, batch 8 x 2 accumulation steps = batch 16. Trainer did not divide the model's own (per-batch
    mean) loss by the accumulation steps either, so the gradient was twice as large."""
    task, args, batch = cases["text"]
    args = [*map(str, args), *SGD]
    folders = {}
    for name, extra in (("start", ["--max_steps", "1", "--learning_rate", "0"]), ("whole", []),
                        ("accumulated", ["--gradient_accumulation_steps", "2"])):
        folders[name] = tmp_path / name
        run_recipe(task, [*args, "--output_dir", folders[name], "--per_device_train_batch_size",
                          str(batch if name == "accumulated" else 2 * batch), *extra])
    start, whole, accumulated = (weights(folders[name]) for name in ("start", "whole", "accumulated"))
    assert relative_difference(accumulated, whole, start) < WEIGHT_TOLERANCE
