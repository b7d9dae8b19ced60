"""The training loop: determinism, schedules, parameter groups, stages, in-process resume exactness."""

from __future__ import annotations

import copy
import subprocess
import sys
import time

import pytest
import torch

from xtc.config import DistillConfig, QuantConfig, TrainConfig
from xtc.distill import layer_maps
from xtc.collate import PaddingCollator
from xtc.models import random_model, tiny_bert_config
from xtc.quant import quantize_
from xtc.reduce import build_student
from xtc.train import Hooks, Trainer, batch_order


def learnable_features(n: int, seed: int, vocab: int = 128) -> list[dict]:
    """Label 1 iff token 10 occurs: a rule a tiny BERT learns in a few epochs, so metrics move with training."""
    g = torch.Generator().manual_seed(seed)
    features = []
    for _ in range(n):
        length = int(torch.randint(4, 12, (1,), generator=g))
        ids = torch.randint(11, vocab, (length,), generator=g)
        label = int(torch.rand(1, generator=g) < 0.5)
        if label:
            ids[int(torch.randint(1, length - 1, (1,), generator=g))] = 10
        ids[0], ids[-1] = 2, 3
        features.append({"input_ids": ids.tolist(), "token_type_ids": [0] * length, "attention_mask": [1] * length,
                         "labels": label})
    return features


TRAIN, DEV = learnable_features(96, 0), {"validation": learnable_features(48, 1)}
COLLATE = PaddingCollator(0)


def make_trainer(seed=42, kd="none", teacher=None, model=None, maps=None, hooks=None, epochs=2.0, stop=None, **train):
    # torch's AdamW: the original rule's eps (1e-6) dwarfs this tiny random BERT's gradients (tests/test_optim.py)
    train = {"optimizer": "torch", **train}
    cfg = TrainConfig(lr=3e-3, epochs=epochs, batch_size=16, eval_every_steps=4, seed=seed, warmup_epochs=0.5, **train)
    model = model if model is not None else random_model(tiny_bert_config(), seed=0)
    return Trainer(model, "sst2", TRAIN, DEV, COLLATE, cfg, DistillConfig(kd=kd), teacher=teacher, maps=maps,
                   hooks=hooks, device=torch.device("cpu"), progress=False, stop=stop)


def test_same_seed_same_metrics_different_seed_different_run():
    a, b, c = make_trainer(42).fit(), make_trainer(42).fit(), make_trainer(7).fit()
    assert [r["metrics"] for r in a.history] == [r["metrics"] for r in b.history]
    assert (a.best_score, a.best_step) == (b.best_score, b.best_step)
    assert [r["metrics"] for r in a.history] != [r["metrics"] for r in c.history]


def test_training_learns_the_rule():
    state = make_trainer(epochs=6.0).fit()
    assert state.best_score >= 0.8  # majority baseline is ~0.5


def test_evaluates_every_n_steps_and_at_each_epoch_end():
    trainer = make_trainer()
    state = trainer.fit()
    steps = [r["step"] for r in state.history]
    assert trainer.steps_per_epoch == 6
    assert steps == [4, 6, 8, 12]  # every 4 steps, plus the end of epoch 1 (step 6); step 12 is both


# parameter groups and the schedule: tests/test_optim.py


def test_batch_order_is_a_pure_function_of_seed_and_epoch():
    assert torch.equal(batch_order(50, 1, 3), batch_order(50, 1, 3))
    assert not torch.equal(batch_order(50, 1, 3), batch_order(50, 1, 4))


def _padded_tokens(order: torch.Tensor, lengths: torch.Tensor, batch_size: int) -> int:
    return sum(int(lengths[b].max()) * len(b) for b in order.split(batch_size))


@pytest.mark.parametrize("n", [1000, 1024, 37])
def test_grouped_batch_order_is_a_seeded_permutation_of_similar_length_batches(n):
    lengths = torch.randint(3, 70, (n,), generator=torch.Generator().manual_seed(n))
    bs = 16
    order = batch_order(n, 1, 3, lengths, bs)
    assert sorted(order.tolist()) == list(range(n))
    assert torch.equal(order, batch_order(n, 1, 3, lengths, bs))
    assert not torch.equal(order, batch_order(n, 1, 4, lengths, bs))
    batches = order.split(bs)
    assert [len(b) for b in batches] == [bs] * (n // bs) + ([n % bs] if n % bs else [])
    plain = batch_order(n, 1, 3)
    assert _padded_tokens(order, lengths, bs) < _padded_tokens(plain, lengths, bs)


def test_grouped_batches_within_one_window_are_slices_of_the_length_ranking():
    n, bs = 160, 16  # 10 batches: one window of GROUP_WINDOW batches
    lengths = torch.randperm(n, generator=torch.Generator().manual_seed(0)) + 1  # distinct lengths
    batches = batch_order(n, 7, 0, lengths, bs).split(bs)
    ranked = sorted((sorted(lengths[b].tolist(), reverse=True) for b in batches), reverse=True)
    assert [x for batch in ranked for x in batch] == list(range(n, 0, -1))
    assert [int(lengths[b].max()) for b in batches] != [max(b) for b in ranked]  # the batches are shuffled


def test_grouped_training_resumes_exactly():
    saved = []
    hooks = Hooks(on_checkpoint=lambda state: saved.append(copy.deepcopy(state)))
    full = make_trainer(hooks=hooks, epochs=2.0, group_by_length=True).fit()
    assert full.history != make_trainer(epochs=2.0).fit().history  # grouping changes the batches
    resumed = make_trainer(epochs=2.0, group_by_length=True, model=random_model(tiny_bert_config(), seed=5))
    resumed.load_state_dict(saved[len(saved) // 2])
    assert resumed.fit().history == full.history


def test_resume_from_any_checkpoint_gives_exactly_the_uninterrupted_run():
    saved = []
    hooks = Hooks(on_checkpoint=lambda state: saved.append(copy.deepcopy(state)))
    full = make_trainer(hooks=hooks, epochs=3.0).fit()
    middle = saved[len(saved) // 2]
    resumed = make_trainer(epochs=3.0, model=random_model(tiny_bert_config(), seed=5))  # other init: all restored
    resumed.load_state_dict(middle)
    state = resumed.fit()
    assert state.history == full.history
    assert (state.best_score, state.best_step) == (full.best_score, full.best_step)


def test_a_stop_signal_saves_the_step_in_progress_and_the_resumed_run_equals_the_uninterrupted_one():
    """SLURM's warning before a time limit (xtc.preempt): the run stops after the step it is in (step 7: between
    evaluations: 6 steps an epoch, every 4 steps), saves that step's state, and resuming from it gives exactly the
    full run."""
    import os
    import signal

    from xtc.preempt import Preempted, StopRequest

    full = make_trainer(epochs=3.0).fit()
    saved, stop = [], StopRequest().install()
    previous = signal.getsignal(signal.SIGURG)
    try:
        def on_log(record):
            if record["kind"] == "train" and record["global_step"] == 7:
                os.kill(os.getpid(), signal.SIGURG)  # a real signal, delivered to this process

        hooks = Hooks(on_checkpoint=lambda state: saved.append(copy.deepcopy(state)), on_log=on_log)
        with pytest.raises(Preempted, match="stopped by SIGURG after step 7"):
            make_trainer(hooks=hooks, epochs=3.0, model=random_model(tiny_bert_config(), seed=0), stop=stop).fit()
    finally:
        signal.signal(signal.SIGURG, previous)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert saved[-1]["state"]["global_step"] == 7 and saved[-2]["state"]["global_step"] == 6  # the epoch end
    resumed = make_trainer(epochs=3.0, model=random_model(tiny_bert_config(), seed=5))
    resumed.load_state_dict(saved[-1])
    state = resumed.fit()
    assert state.history == full.history
    assert (state.best_score, state.best_step) == (full.best_score, full.best_step)


def _teacher_and_student(weight_bits=1):
    teacher = random_model(tiny_bert_config(), seed=0)
    make_trainer(model=teacher, epochs=4.0).fit()
    teacher_layer = (1, 3)
    student = build_student(teacher, teacher_layer)
    quantize_(student, QuantConfig(weight_bits=weight_bits))
    return teacher.eval(), student, layer_maps(teacher_layer, 4)


def test_one_stage_kd_trains_a_quantized_student_and_leaves_the_teacher_alone():
    teacher, student, maps = _teacher_and_student()
    before = copy.deepcopy(teacher.state_dict())
    latent = student.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    logged = []
    state = make_trainer(kd="one_stage", teacher=teacher, model=student, maps=maps, epochs=2.0,
                         hooks=Hooks(on_log=logged.append)).fit()
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in teacher.parameters())  # the caller's teacher is not modified either
    assert not torch.equal(student.bert.encoder.layer[0].attention.self.query.weight, latent)
    train = [r for r in logged if r["kind"] == "train"]
    assert {"pred", "att", "rep", "loss"} <= set(train[0])
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    assert state.best_step > 0


def test_kd_drives_a_reduced_fp_student_to_the_teacher():
    cfg = tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = random_model(cfg, seed=0).eval()
    maps = layer_maps((1, 3), 4)
    student = build_student(random_model(cfg, seed=3), (1, 3))  # unrelated weights: a real gap to close
    batch = COLLATE(TRAIN[:48])
    trainer = make_trainer(kd="logits_hidden", teacher=teacher, model=student, maps=maps, epochs=4.0)
    def rep_loss():
        with torch.no_grad():
            return float(trainer._forward_loss(trainer.stages[0], batch)["rep"])
    before = rep_loss()
    trainer.fit()
    assert rep_loss() < before / 2


def test_two_stage_kd_runs_both_stages_with_their_terms_and_lr():
    teacher, student, maps = _teacher_and_student(weight_bits=2)
    logged = []
    trainer = make_trainer(kd="two_stage", teacher=teacher, model=student, maps=maps, epochs=2.0,
                           hooks=Hooks(on_log=logged.append))
    state = trainer.fit()
    train = [r for r in logged if r["kind"] == "train"]
    first = [r for r in train if r["stage"] == "intermediate"]
    second = [r for r in train if r["stage"] == "prediction"]
    assert len(first) == len(second) == 6
    assert set(first[0]) >= {"att", "rep"} and "pred" not in first[0]
    assert "pred" in second[0] and "att" not in second[0]
    assert max(r["lr"] for r in first) == pytest.approx(2.5 * 3e-3)
    assert max(r["lr"] for r in second) == pytest.approx(3e-3)
    assert all(r["stage"] == "prediction" for r in state.history if r["global_step"] == state.best_step)


def test_kd_without_teacher_is_an_error():
    with pytest.raises(ValueError, match="distill.kd='one_stage' needs a teacher"):
        make_trainer(kd="one_stage")


def test_train_records_carry_their_start_time():
    """`started_at` (Unix time a step began): throughput and start-up cost can be read from train_log.jsonl."""
    records = []
    trainer = make_trainer(hooks=Hooks(on_log=records.append), epochs=1.0)
    before = time.time()
    trainer.fit()
    starts = [r["started_at"] for r in records if r["kind"] == "train"]
    assert len(starts) == 6 and before - 0.01 <= starts[0] <= starts[-1] <= time.time()
    assert starts == sorted(starts)


def test_importing_the_training_loop_leaves_the_metrics_stack_for_later():
    code = "import sys, xtc.train; print(sorted(m for m in ('sklearn', 'scipy.stats', 'xtc.metrics') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_every_evaluation_nan_is_a_one_line_error():
    """A frozen zero regression head predicts a constant: Pearson is NaN at every evaluation, so nothing is best."""
    model = random_model(tiny_bert_config(num_labels=1), seed=0)
    torch.nn.init.zeros_(model.classifier.weight)
    model.classifier.weight.requires_grad_(False)
    model.classifier.bias.requires_grad_(False)
    regression = [dict(f, labels=float(f["labels"]) + 0.5 * i % 3) for i, f in enumerate(TRAIN)]
    dev = {"validation": [dict(f, labels=float(i % 5)) for i, f in enumerate(DEV["validation"])]}
    cfg = TrainConfig(lr=2e-3, epochs=1.0, batch_size=16, eval_every_steps=4)
    trainer = Trainer(model, "stsb", regression, dev, COLLATE, cfg, DistillConfig(kd="none"),
                      device=torch.device("cpu"), progress=False)
    with pytest.warns(Warning):  # scipy: the input is constant
        with pytest.raises(ValueError, match=r"no best checkpoint: all 2 evaluations of stage .* gave pearson = nan "
                                             r"\(constant predictions\?\); lower the learning rate"):
            trainer.fit()
