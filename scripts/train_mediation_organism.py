"""Train the arithmetic model organism of causal mediation analysis and write the shipped checkpoint.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_mediation_organism.py [out_dir]

Default out_dir: anchorlens/data/mediation/organism (what ``anchorlens.mediation.arithmetic_organism()`` loads).
Prints the training record (train and held-out accuracy).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from anchorlens.mediation.organism import SHIPPED, train_organism

if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else SHIPPED
    info = train_organism(out)
    print(json.dumps({k: v for k, v in info.items() if k != "held_out_prompts"}, indent=1))
