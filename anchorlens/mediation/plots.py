"""Heatmaps of mediation effects, like the paper's figures: layer x position (or layer x unit)."""

from __future__ import annotations


def plot_effects(result, metric: str, ax=None, tokens: list[str] | None = None, cmap: str = "Purples", **kwargs):
    """Mean effect per cell as a heatmap; ``tokens`` label the positions (default: the first base prompt's
    position numbers). For unit components at one position: layer x unit."""
    import matplotlib.pyplot as plt

    mean = result.mean(metric)[0]
    if result.unit and mean.shape[1] == 1:
        grid, xlabel, xticks = mean[:, 0], result.unit, None
    elif result.unit:
        grid, xlabel, xticks = mean.nanmean(-1), "position (mean over units)", tokens
    else:
        grid, xlabel, xticks = mean, "position", tokens
    grid = grid.float().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4, 0.5 * grid.shape[1] + 2), max(3, 0.25 * grid.shape[0] + 1.5)))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap=cmap, **kwargs)
    ax.set_ylabel("layer")
    ax.set_yticks(range(len(result.layers)), [str(layer) for layer in result.layers], fontsize=7)
    ax.set_xlabel(xlabel)
    if xticks is not None and len(xticks) == grid.shape[1]:
        ax.set_xticks(range(len(xticks)), xticks, rotation=60, ha="right", fontsize=7)
    elif xlabel == "position" and result.positions == ["last"]:
        ax.set_xticks([0], ["last"])
    ax.set_title(f"{result.component}: {metric} ({result.n_pairs} pairs)")
    ax.figure.colorbar(image, ax=ax, fraction=0.04)
    return ax
