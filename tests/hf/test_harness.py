"""``decaylab eval --lm-eval``: lm-evaluation-harness in-process, on a local task over local text files."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decaylab.cli import main
from decaylab.data.tokenizer import load_tokenizer
from decaylab.evaluation.perplexity import bits_per_byte, position_losses
from decaylab.model import DecayLM
from tests.evaluation.eval_run_helpers import WORDS

REPO = Path(__file__).resolve().parents[2]

TASK = """task: local_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
"""


@pytest.fixture
def run_and_task(bpe_run, tmp_path, monkeypatch) -> tuple[Path, Path, list[str]]:
    """A copy of the run with random (far from uniform) weights, and a local task over 5 documents."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    run = Path(shutil.copytree(bpe_run, tmp_path / "run"))
    model = DecayLM.from_pretrained(run / "model")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(run / "model", overwrite=True)
    rng = random.Random(5)
    docs = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(3))
            for _ in range(5)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local_ppl.yaml").write_text(TASK.format(docs=tmp_path / "docs.jsonl"))
    return run, tmp_path / "tasks", docs


def decaylab_scores(run: Path, docs: list[str]) -> tuple[float, float]:
    """decaylab's own evaluation of the documents: (word perplexity, bits per byte), each scored from its start."""
    tokenizer = load_tokenizer(run / "tokenizer.json")
    model = DecayLM.from_pretrained(run / "model")
    batches = []
    for doc in docs:  # each document follows an end-of-text token, the context lm-eval gives its first token
        ids = torch.tensor([tokenizer.end_of_document] + tokenizer.encode(doc))
        batches.append((ids[None, :-1], ids[None, 1:]))
    scored = position_losses(model, batches)
    nll = float(scored.loss_sum.sum())
    words = sum(len(re.split(r"\s+", doc)) for doc in docs)
    num_bytes = sum(len(doc.encode("utf-8")) for doc in docs)
    return math.exp(nll / words), bits_per_byte(scored.mean_loss, scored.tokens, num_bytes)


def test_rolling_perplexity_equals_decaylab_evaluation(run_and_task, capsys):
    run, tasks, docs = run_and_task
    assert main(["eval", str(run), "--lm-eval", "local_ppl", "--lm-eval-include", str(tasks), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "local_ppl: word_perplexity" in printed and "lm_eval.json" in printed
    result = json.loads((run / "lm_eval.json").read_text())
    metrics = result["results"]["local_ppl"]
    word_ppl, bpb = decaylab_scores(run, docs)
    assert word_ppl > 50  # far from a perfect model: a shifted or dropped token would move the numbers
    assert metrics["word_perplexity,none"] == pytest.approx(word_ppl, rel=5e-3)
    assert metrics["bits_per_byte,none"] == pytest.approx(bpb, rel=5e-3)
    assert result["model_source"] == "model" and result["max_length"] == 64 and result["tasks"] == ["local_ppl"]
    assert not (run / "eval.json").exists()  # --lm-eval runs the harness only


def test_unknown_task(run_and_task, capsys):
    run, tasks, _ = run_and_task
    assert main(["eval", str(run), "--lm-eval", "local_pp", "--lm-eval-include", str(tasks), "--quiet"]) == 2
    assert "lm-eval knows no task 'local_pp'" in capsys.readouterr().err
    assert not (run / "lm_eval.json").exists()


@pytest.mark.slow
def test_lm_eval_command_line_on_an_exported_folder(run_and_task, tmp_path):
    """``lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True`` in a fresh process."""
    run, tasks, docs = run_and_task
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
           f"pretrained={tmp_path / 'hf'},trust_remote_code=True", "--tasks", "local_ppl", "--include_path",
           str(tasks), "--device", "cpu", "--output_path", str(tmp_path / "results")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = (tmp_path / "results").rglob("results_*.json")
    metrics = json.loads(results.read_text())["results"]["local_ppl"]
    assert metrics["word_perplexity,none"] == pytest.approx(decaylab_scores(run, docs)[0], rel=5e-3)
