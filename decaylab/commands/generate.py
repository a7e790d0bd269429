"""``decaylab generate RUN_DIR --prompt TEXT``: sample a continuation from a trained run's model.

The prompt is encoded with the run's own tokenizer (``RUN_DIR/tokenizer.json``), the model continues it
(temperature 0 = greedy; top-k / top-p restrict sampling to the likeliest tokens) and the new tokens are
decoded and printed. A prompt is continued mid-sentence: the end-of-line token that a word-level tokenizer
adds to each line is dropped unless the prompt itself ends with a newline.
"""

from __future__ import annotations

import argparse
import sys

from decaylab.commands.args import positive_int


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"temperature must be >= 0 (0 = greedy); got {text!r}")
    return value


def _top_p(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"top-p must be in (0, 1] (1 = no nucleus filtering); got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `decaylab train`")
    parser.add_argument("--prompt", required=True, help="text to continue (encoded with the run's tokenizer)")
    parser.add_argument(
        "--max-new-tokens", type=positive_int, default=50, help="number of tokens to generate (default: 50)"
    )
    parser.add_argument(
        "--temperature", type=_temperature, default=1.0, help="sampling temperature; 0 picks the likeliest token (default: 1.0)"
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=None, help="sample only among the K likeliest tokens (default: all)"
    )
    parser.add_argument(
        "--top-p", type=_top_p, default=None, help="sample only from the smallest set of tokens with probability >= P"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed, for reproducible samples (default: 0)")
    parser.add_argument(
        "--checkpoint", default=None, help="use a checkpoint instead of the final model: 'latest', 'step-N' or a path"
    )
    parser.add_argument("--device", default=None, help="device to run on, e.g. cpu or cuda (default: cuda if present)")
    parser.add_argument(
        "--echo", action="store_true", help="print the prompt as the model saw it (unknown words as <unk>) before "
        "the continuation"
    )


def generate_text(
    run_dir: str,
    prompt: str,
    *,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    checkpoint: str | None = None,
    device: str | None = None,
) -> tuple[str, list[str], str]:
    """The decoded continuation of ``prompt``, a list of notices (unknown words, checkpoint used) and the prompt
    as the model saw it (decoded from its ids: words outside the vocabulary read <unk>)."""
    import torch

    from decaylab.data.tokenizer import load_tokenizer
    from decaylab.run.loading import open_run
    from decaylab.rundir import TOKENIZER, check_run_dir

    tokenizer_path = check_run_dir(run_dir) / TOKENIZER
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no tokenizer.json; the run directory is incomplete, retrain it")
    tokenizer = load_tokenizer(tokenizer_path)
    ids = tokenizer.encode(prompt)
    eos_id = getattr(tokenizer, "eos_id", None)
    if ids and eos_id is not None and ids[-1] == eos_id and not prompt.endswith("\n"):
        ids = ids[:-1]  # the word tokenizer ends every line with <eos>; a prompt is continued mid-sentence
    if not ids:
        raise ValueError("the prompt encodes to no tokens; give some text with --prompt")
    notices = []
    unk_id = getattr(tokenizer, "unk_id", None)
    if unk_id is not None and unk_id in ids:
        notices.append(f"{ids.count(unk_id)} prompt word(s) are not in the run's vocabulary and became <unk>")
    run = open_run(run_dir, checkpoint=checkpoint, device=device)
    if run.step is not None:
        notices.append(f"using checkpoint {run.model_source}")
    vocab = run.model.cfg.vocab_size
    if top_k is not None and top_k > vocab:
        raise ValueError(f"--top-k {top_k} exceeds the vocabulary size {vocab}; use a smaller K")
    device_of_model = next(run.model.parameters()).device
    generator = torch.Generator(device_of_model).manual_seed(seed)  # same seed, same sample
    input_ids = torch.tensor([ids], dtype=torch.long, device=device_of_model)  # [1, T]
    out = run.model.generate(
        input_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
    )
    new_ids = out[0, input_ids.shape[1] :].tolist()
    return tokenizer.decode(new_ids), notices, tokenizer.decode(ids)


def run(args: argparse.Namespace) -> int:
    text, notices, seen_prompt = generate_text(
        args.run_dir,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        checkpoint=args.checkpoint,
        device=args.device,
    )
    for notice in notices:
        print(f"generate: {notice}", file=sys.stderr)
    if args.echo:
        print(seen_prompt, end=" ")
    print(text)
    return 0
