"""``decaylab export SOURCE --format hf --out DIR``: a trained model as a Hugging Face transformers folder."""

from __future__ import annotations

import argparse

FORMATS = ("hf",)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="a run directory written by `decaylab train`, or a DecayLM.save_pretrained folder")
    parser.add_argument("--format", choices=FORMATS, default="hf",
                        help="output format: hf, a transformers folder with remote code and tokenizer (default)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to create (must not exist)")
    parser.add_argument("--checkpoint", default=None,
                        help="export a checkpoint of the run instead of its final model: 'latest', 'step-N' or a path")
    parser.add_argument("--tokenizer", default=None, metavar="FILE",
                        help="tokenizer file to convert (default: tokenizer.json of the run or model folder)")
    parser.add_argument("--no-tokenizer", action="store_true", help="export the model without a tokenizer")


def run(args: argparse.Namespace) -> int:
    from decaylab.hf.export import export_hf

    if args.no_tokenizer and args.tokenizer:
        raise ValueError("--tokenizer and --no-tokenizer contradict each other; pass one")
    out = export_hf(args.source, args.out, checkpoint=args.checkpoint, tokenizer=args.tokenizer,
                    with_tokenizer=not args.no_tokenizer)
    print(f"wrote {out}: load it with AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)")
    return 0
