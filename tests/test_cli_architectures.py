"""``anchorlens analyze --model <folder>`` end to end on saved random Qwen3, OLMo-3 and gpt-oss models, as a user
runs it (the real process), with no fallback warning: every step runs on its bounded-memory path.

The folders hold what ``save_pretrained`` writes for a small random model of the family (QK norms; OLMo-3 and
gpt-oss with sliding windows shorter than the trace; gpt-oss with sinks and experts) and the embedded tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_anchorlens

pytestmark = pytest.mark.slow  # a real process per family

COT = ("We need 6 times 7. Six sevens make a product. Let me count them one at a time. Seven and seven are 14. "
       "Then 14 and 14 are 28. Add one more 14 to get 42. Let me check: 7 + 7 + 7 + 7 + 7 + 7 = 42. "
       "That agrees with the count. So the answer is \\boxed{42}.")


def save_random(family: str, folder: Path) -> Path:
    from transformers import AutoTokenizer

    from anchorlens.models import embedded_model_dir
    from anchorlens.random_models import random_config

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config, model_class = random_config(family, tokenizer, sliding_window=8)
    torch.manual_seed(0)
    model_class(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["qwen3", "olmo3", "gpt_oss"])
def test_analyze_runs_on_a_saved_random_model_with_no_fallback(family, tmp_path):
    folder = save_random(family, tmp_path / f"random-{family}")
    cot = tmp_path / "cot.txt"
    cot.write_text(COT)
    out = tmp_path / "report"
    done = run_anchorlens("analyze", "--model", str(folder), "--trace", str(cot), "--problem", "What is 6 times 7?",
                          "--answer", "42", "--rollouts", "2", "--rollout-tokens", "8", "--heads", "2",
                          "--out", str(out), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Fallback" not in done.stderr, done.stderr[-3000:]  # no FusedAttention/Suppression/Flow fallback
    assert (out / "report.html").exists()
    sentences = pd.read_csv(out / "sentences.csv")
    assert len(sentences) >= 8
    for column in ("receiver_score", "suppression_out_kl", "flow_to_answer", "resampling_importance_accuracy"):
        assert column in sentences.columns, (column, list(sentences.columns))
