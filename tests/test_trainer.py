"""The one training loop (`tokenlm.trainer`): its sampler, its LR schedule, and both tracks running through it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import tokenlm.trainer as trainer
from tokenlm.trainer import Sampler, lr_at

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_setup  # noqa: E402


def test_sampler_is_a_function_of_seed_and_step():
    walked = Sampler(7, 3, seed=5)
    seq = [walked.indices(s) for s in range(10)]
    for s in (9, 0, 4):  # any step, in any order, from a fresh sampler: what resume relies on
        assert Sampler(7, 3, seed=5).indices(s) == seq[s]
    assert [Sampler(7, 3, seed=6).indices(s) for s in range(10)] != seq


@pytest.mark.parametrize("n,size", [(7, 3), (5, 5), (4, 9), (10, 1)])
def test_sampler_gives_every_example_once_per_epoch(n, size):
    stream = [i for s in range(4 * n) for i in Sampler(n, size, seed=1).indices(s)]  # 4n steps: >= 4 epochs
    epochs = len(stream) // n
    for e in range(epochs):
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n)), e
    assert {tuple(stream[e * n:(e + 1) * n]) for e in range(epochs)} != {tuple(range(n))}  # shuffled


def test_sampler_does_o_batch_work_per_step(monkeypatch):
    """One `torch.randperm(n)` per epoch, none per step or per example; passed epochs are dropped."""
    calls = []
    real = torch.randperm

    def counting(n, *a, **kw):
        calls.append(n)
        return real(n, *a, **kw)

    monkeypatch.setattr(torch, "randperm", counting)
    n, size = 1000, 8
    sampler = Sampler(n, size, seed=0)
    for s in range(3 * n // size):  # three epochs
        assert len(sampler.indices(s)) == size
        assert len(sampler._perms) <= 2
    assert calls == [n, n, n]


def test_sampler_micro_batches_split_the_global_batch():
    sampler = Sampler(11, 12, seed=2)  # 2 ranks x 3 rows x 2 micro-batches
    glob = sampler.indices(4)
    parts = [sampler.micro_batches(4, 3, rank, 2) for rank in range(2)]
    assert [len(p) for p in parts] == [2, 2] and all(len(m) == 3 for p in parts for m in p)
    assert [i for m in range(2) for r in range(2) for i in parts[r][m]] == glob


def test_lr_schedule_matches_transformers_cosine_with_floor():
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    steps, warm, ratio = 50, 5, 0.1
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    ref = get_cosine_with_min_lr_schedule_with_warmup(opt, warm, steps, min_lr_rate=ratio).lr_lambdas[0]
    for s in range(warm, steps + 1):
        assert lr_at(s, 2.0, steps, warm, ratio) == pytest.approx(2.0 * ref(s), rel=1e-12), s
    assert [lr_at(s, 2.0, steps, warm, ratio) for s in range(warm)] == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0])
    assert lr_at(steps + 5, 2.0, steps, warm, ratio) == pytest.approx(0.2)  # stays at the floor
    assert lr_at(steps - 1, 2.0, steps, 0, 1.0) == 2.0  # floor 1: constant


@pytest.fixture()
def record_steps(monkeypatch):
    """Record (micro-batch indices, LR) of every optimizer step the loop makes."""
    seen: list[tuple[list, float]] = []
    real = trainer._step

    def spy(task, model, optimizer, acc, micro, cfg):
        seen.append((micro, optimizer.param_groups[0]["lr"]))
        return real(task, model, optimizer, acc, micro, cfg)

    monkeypatch.setattr(trainer, "_step", spy)
    return seen


def test_both_tracks_run_the_same_loop(tmp_path, record_steps):
    """Same loop settings -> the same data order and LR at every step for `tokenlm train` and connector training,
    and the same layout on disk."""
    from connectors import ContinuousVLM
    from uti.testing import TINY_FEAT, TINY_IDS, byte_encode, tiny_connector, tiny_llm, toy_captions
    from connectors.train import ConnectorTrainConfig, train_connector
    from tokenlm.train import TrainConfig, train

    setup = make_setup(tmp_path / "setup")
    steps, b, accum, lr, warm, seed = 5, 2, 2, 1e-2, 2, 3
    tok = train(TrainConfig(out=str(tmp_path / "tok"), data=(setup["data"],), space=setup["space"], base=setup["base"],
                            steps=steps, batch_size=b, grad_accum=accum, max_len=64, tasks=("text", "i2t"), lr=lr,
                            warmup_steps=warm, seed=seed, progress=False))
    tok_steps = list(record_steps)
    record_steps.clear()
    n = tok.info["train_rows"]
    vlm = ContinuousVLM(tiny_llm(), tiny_connector(resampler="mlp"), TINY_IDS)
    cfg = ConnectorTrainConfig(steps=steps, batch_size=b, grad_accum=accum, lr=lr, warmup_steps=warm, seed=seed,
                               progress=False)
    con = train_connector(vlm, toy_captions(n, 0), [], encode=byte_encode, config=cfg, out_dir=tmp_path / "con",
                          tower={"name": "toy", "hidden_size": TINY_FEAT})
    sampler = Sampler(n, b * accum, seed)
    want = [(sampler.micro_batches(s, b, 0, 1), lr_at(s, lr, steps, warm, 0.1)) for s in range(steps)]
    assert tok_steps == want and list(record_steps) == want
    assert len(tok.losses) == len(con.losses) == steps
    for run in (tmp_path / "tok", tmp_path / "con"):
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step-{steps:06d}"]
        names = {p.name for p in (run / "checkpoints" / f"step-{steps:06d}").iterdir()}
        assert {"train_state.json", "train_state.safetensors"} <= names
        assert json.loads((run / "train_result.json").read_text())["losses"] == (tok if run.name == "tok" else con).losses


def test_foreign_train_state_is_refused_in_one_line(tmp_path):
    from connectors import ConnectorError, ContinuousVLM
    from uti.testing import TINY_FEAT, TINY_IDS, byte_encode, tiny_connector, tiny_llm, toy_captions
    from connectors.train import ConnectorTrainConfig, train_connector

    def run(**kw):
        vlm = ContinuousVLM(tiny_llm(), tiny_connector(resampler="mlp"), TINY_IDS)
        return train_connector(vlm, toy_captions(4, 0), [], encode=byte_encode, out_dir=tmp_path,
                               config=ConnectorTrainConfig(steps=3, batch_size=2, warmup_steps=1, progress=False),
                               tower={"name": "toy", "hidden_size": TINY_FEAT}, **kw)

    run(stop_at=1)
    state = tmp_path / "checkpoints" / "step-000001" / "train_state.json"
    doc = json.loads(state.read_text())
    state.write_text(json.dumps({**doc, "version": 1}))
    with pytest.raises(ConnectorError, match="not a tokenlm-train-state version 2 file") as err:
        run()
    assert "\n" not in str(err.value)
    state.write_text(json.dumps({k: v for k, v in doc.items() if k != "facts"}))
    with pytest.raises(ConnectorError, match="lacks facts"):
        run()
    state.write_text(json.dumps(doc))
    assert len(run().losses) == 3


@pytest.mark.parametrize("progress,shown", [(None, False), (False, False), (True, True)])
def test_progress_bar_only_on_a_tty_or_when_asked(tmp_path, capsys, progress, shown):
    """pytest's stderr is no TTY: the default (None) shows no bar there, `progress=True` does."""
    from connectors import ContinuousVLM
    from uti.testing import TINY_FEAT, TINY_IDS, byte_encode, tiny_connector, tiny_llm, toy_captions
    from connectors.train import ConnectorTrainConfig, train_connector

    vlm = ContinuousVLM(tiny_llm(), tiny_connector(resampler="mlp"), TINY_IDS)
    cfg = ConnectorTrainConfig(steps=2, batch_size=2, warmup_steps=1, progress=progress)
    train_connector(vlm, toy_captions(4, 0), [], encode=byte_encode, config=cfg, out_dir=tmp_path,
                    tower={"name": "toy", "hidden_size": TINY_FEAT})
    assert ("connector/resampler" in capsys.readouterr().err) == shown
