"""``decaylab export --format hf``: the folder loads in transformers (also in a fresh process) and back into DecayLM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decaylab.cli import main
from decaylab.data.tokenizer import load_tokenizer
from decaylab.model import DecayLM

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(bpe_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "hf"
    assert main(["export", str(bpe_run), "--format", "hf", "--out", str(out)]) == 0
    return out


def test_folder_contents(exported, bpe_run):
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "configuration_decaylab.py", "modeling_decaylab.py"} <= names
    config = json.loads((exported / "config.json").read_text())
    run_config = json.loads((bpe_run / "config.json").read_text())
    assert config["model_type"] == "decaylab" and config["decaylab"] == run_config["model"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_decaylab.DecayLabForCausalLM"
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_loads_in_this_process(exported, bpe_run):
    """``import decaylab`` registered the classes: no trust_remote_code needed; DecayLM reads the folder too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from decaylab.hf.modeling import DecayLabForCausalLM

    reference = DecayLM.from_pretrained(bpe_run / "model").eval()
    model = AutoModelForCausalLM.from_pretrained(exported)
    assert isinstance(model, DecayLabForCausalLM)
    back = DecayLM.from_pretrained(exported)
    ids = torch.randint(0, reference.cfg.vocab_size, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids))
        assert torch.equal(back(ids), reference(ids))
    tokenizer = AutoTokenizer.from_pretrained(exported)
    text = "the cat sat on a mat\nwhile dogs ran far away"
    assert tokenizer(text)["input_ids"] == load_tokenizer(bpe_run / "tokenizer.json").encode(text)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.padding_side == "left"


def test_loads_in_a_fresh_process(exported, bpe_run, tmp_path):
    """trust_remote_code=True finds decaylab through the folder's own modeling file; nothing imports it by hand."""
    script = f"""
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
assert "decaylab" not in sys.modules
model = AutoModelForCausalLM.from_pretrained({str(exported)!r}, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained({str(exported)!r})
batch = tokenizer(["the cat sat", "birds sang in old green trees"], return_tensors="pt", padding=True)
out = model.generate(**batch, max_new_tokens=6, do_sample=False)
print(json.dumps({{"class": type(model).__name__, "ids": batch["input_ids"].tolist(),
                  "mask": batch["attention_mask"].tolist(), "out": out.tolist()}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["class"] == "DecayLabForCausalLM"
    model = DecayLM.from_pretrained(bpe_run / "model").eval()
    for ids, mask, out in zip(result["ids"], result["mask"], result["out"]):
        prompt = torch.tensor([t for t, m in zip(ids, mask) if m])[None]
        # generation stops at <|endoftext|> in transformers, never in DecayLM.generate: compare up to it
        expected = model.generate(prompt, 6, temperature=0)[0, prompt.shape[1] :].tolist()
        got = out[len(ids) :]
        stop = expected.index(0) + 1 if 0 in expected else len(expected)
        assert got[:stop] == expected[:stop]


def test_model_folder_source(bpe_run, tmp_path, capsys):
    model_dir = bpe_run / "model"  # DecayLM.save_pretrained's folder: no tokenizer beside it
    assert main(["export", str(model_dir), "--out", str(tmp_path / "a")]) == 2
    assert "--tokenizer FILE" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["export", str(model_dir), "--out", str(tmp_path / "b"), "--no-tokenizer"]) == 0
    assert not (tmp_path / "b" / "tokenizer.json").exists() and (tmp_path / "b" / "model.safetensors").exists()
    tok = str(bpe_run / "tokenizer.json")
    assert main(["export", str(model_dir), "--out", str(tmp_path / "c"), "--tokenizer", tok]) == 0
    assert (tmp_path / "c" / "tokenizer.json").exists()


def _fails(args, capsys, *fragments):
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_input_writes_nothing(bpe_run, tmp_path, capsys):
    run = Path(shutil.copytree(bpe_run, tmp_path / "run"))
    out = tmp_path / "out"

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails([str(run), "--out", str(out)], capsys, "already exists")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"

    new = tmp_path / "new"
    (run / "tokenizer.json").write_text(json.dumps({"decaylab_tokenizer": "integer", "vocab_size": 300}))
    _fails([str(run), "--out", str(new)], capsys, "integer tokenizer", "--no-tokenizer")
    big = {"decaylab_tokenizer": "word", "unk": "<unk>", "eos": "<eos>",
           "vocab": ["<unk>", "<eos>"] + [f"w{i}" for i in range(400)]}
    (run / "tokenizer.json").write_text(json.dumps(big))
    _fails([str(run), "--out", str(new)], capsys, "402 tokens", "300 embedding rows")

    shutil.rmtree(run / "model")
    _fails([str(run), "--out", str(new)], capsys, "has no model/", "train it first")
    _fails([str(tmp_path / "missing"), "--out", str(new)], capsys, "does not exist")
    assert not new.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]
