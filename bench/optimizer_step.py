"""AdamW step time for a model's parameters: the default foreach kernel against the fused one.

PYTHONPATH=. python bench/optimizer_step.py --model PRETRAINED_DIR [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from qa.model.loading import load_qa_model
from qa.train.optimization import parameter_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    model = load_qa_model(args.model, require_qa_head=False)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-3
    count = sum(parameter.numel() for parameter in model.parameters())
    print(f"{count / 1e6:.1f}M parameters, {os.cpu_count()} cores, torch {torch.__version__}")
    for kind in ("foreach", "fused", "foreach", "fused"):  # interleaved, twice
        optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-4, **{kind: True})
        for _ in range(3):
            optimizer.step()
        began = time.perf_counter()
        for _ in range(args.steps):
            optimizer.step()
        print(f"{kind}: {(time.perf_counter() - began) / args.steps * 1000:.1f} ms per step")


if __name__ == "__main__":
    main()
