"""The paper's picture as numbers: where the counterfactual information sits, and what carries it to the answer.

Stolfo et al.: attention moves operand and operator information from their positions to the last token in
early and middle layers, and MLPs at the last token write the result. With the normalised logit difference
(0: base run, 1: counterfactual run) of ``resid_pre``, ``attn_out`` and ``mlp_out`` sweeps over all
positions, ``mediation_picture`` measures:

- ``source_early``: ``resid_pre`` at layer 0, the effect summed over the positions where a pair's base and
  counterfactual differ (its operands, or its operator word), mean over pairs: the information starts there;
- ``last_early``: ``resid_pre`` at layer 0 at the last position (nothing has arrived yet);
- ``source_late`` / ``last_late``: the same at the last layer: the information has moved to the last token;
- ``attn_last_early``, ``attn_last_late``: ``attn_out`` at the last position summed over the first / second
  half of the layers (attention moves it early);
- ``mlp_last_late``: ``mlp_out`` at the last position summed over the second half (MLPs write the result);
- ``mlp_last_share``: the share of all |``mlp_out``| effect (summed over cells) that is at the last position.

``holds`` applies the thresholds; on the trained organism it is True, on its shuffled-weights control False.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from anchorlens.mediation.errors import MediationInputError
from anchorlens.mediation.prompts import PromptPair
from anchorlens.mediation.sweep import mediation_sweep
from anchorlens.results import Result


@dataclass
class MediationPicture(Result):
    """The numbers of the paper's picture (see the module docstring) and the thresholds they are held to."""

    source_early: float
    last_early: float
    source_late: float
    last_late: float
    attn_last_early: float
    attn_last_late: float
    mlp_last_late: float
    mlp_last_share: float
    n_pairs: int

    def checks(self) -> dict[str, bool]:
        """Each statement of the picture, true or false."""
        return {
            "information starts at the changed positions": self.source_early >= 0.8 and abs(self.last_early) < 0.05,
            "and ends at the last token": self.last_late >= 0.9 and abs(self.source_late) < 0.05,
            "attention moves it in the first half of the layers":
                self.attn_last_early >= 0.5 and abs(self.attn_last_late) < 0.15,
            "MLPs at the last token write the result in the second half": self.mlp_last_late >= 0.3,
            "and MLPs elsewhere hardly matter": self.mlp_last_share >= 0.75,
        }

    @property
    def holds(self) -> bool:
        return all(self.checks().values())

    def to_dict(self) -> dict:
        return asdict(self)

    def to_dataframe(self):
        """One row per statement of the picture: whether it holds."""
        import pandas as pd

        return pd.DataFrame([{"statement": k, "holds": v} for k, v in self.checks().items()])

    def plot(self, ax=None):
        """Bars: each number of the picture (normalised logit difference; share for ``mlp_last_share``)."""
        import matplotlib.pyplot as plt

        values = {k: v for k, v in self.to_dict().items() if k != "n_pairs"}
        ax = ax or plt.subplots(figsize=(6, 3))[1]
        ax.bar(range(len(values)), list(values.values()))
        ax.set_xticks(range(len(values)), list(values), rotation=45, ha="right", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_title(f"the picture {'holds' if self.holds else 'does not hold'} ({self.n_pairs} pairs)")
        return ax


def mediation_picture(model, pairs: Sequence[PromptPair], chunk_size: int = 256,
                      progress: bool = True) -> MediationPicture:
    """Sweep ``resid_pre``, ``attn_out`` and ``mlp_out`` over every position of equal-length ``pairs`` and
    summarise them (normalised logit difference, mean over pairs)."""
    if not pairs:
        raise MediationInputError("mediation_picture needs at least one pair (filter_pairs may have dropped all)")
    args = ([p.base for p in pairs], [p.counterfactual for p in pairs], [p.base_answer for p in pairs],
            [p.counterfactual_answer for p in pairs])
    base_tokens = torch.stack([model.to_tokens(p.base)[0] for p in pairs])
    cf_tokens = torch.stack([model.to_tokens(p.counterfactual)[0] for p in pairs])
    if bool((base_tokens == cf_tokens).all()):
        raise MediationInputError("base and counterfactual prompts are identical: nothing to trace")
    results = {c: mediation_sweep(model, *args, component=c, positions="all", metric="logit_diff",
                                  chunk_size=chunk_size, progress=progress)
               for c in ("resid_pre", "attn_out", "mlp_out")}
    n_layers, last = model.cfg.n_layers, base_tokens.shape[1] - 1
    half = n_layers // 2
    resid, attn, mlp = (results[c].effects for c in ("resid_pre", "attn_out", "mlp_out"))
    per_pair = results["resid_pre"].values("logit_diff")                         # [pair, layer, position]
    changed = (base_tokens != cf_tokens).to(per_pair.dtype)                      # [pair, position]
    source = lambda layer: (per_pair[:, layer] * changed).nansum(-1).mean().item()  # noqa: E731
    source_late = (resid[-1, :last] * changed.any(0)[:last]).sum().item()
    return MediationPicture(
        source_early=source(0), last_early=resid[0, last].item(),
        source_late=source_late, last_late=resid[-1, last].item(),
        attn_last_early=attn[:half, last].sum().item(), attn_last_late=attn[half:, last].sum().item(),
        mlp_last_late=mlp[half:, last].sum().item(),
        mlp_last_share=(mlp[:, last].abs().sum() / mlp.abs().sum().clamp(min=1e-12)).item(), n_pairs=len(pairs),
    )
