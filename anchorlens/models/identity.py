"""What names a model in a saved result's key: its name, dtype and a fingerprint of its weights."""

from __future__ import annotations

import torch

def model_identity(model) -> dict:
    """What names a model's outputs in a saved result's key: its name, dtype and a fingerprint of its weights.

    The fingerprint (``weights_fingerprint``) is recomputed at every call (milliseconds), so weights edited in
    place give another identity.
    """
    dtype = next(model.parameters()).dtype
    return {"name": getattr(model, "anchorlens_name", None) or model.cfg.model_name,
            "dtype": str(dtype).removeprefix("torch."), "weights": weights_fingerprint(model)}


FINGERPRINT_SAMPLES = 1024


def weights_fingerprint(model) -> str:
    """A short hash of a model's weights: ``model.anchorlens_fingerprint`` when the model carries one, else a hash
    of every parameter's name, shape, dtype and an evenly strided sample of its values.

    The sample (at most 1,024 values per parameter) keeps this to milliseconds, even for large models; two models
    that differ only in weights outside every sample would collide (a fine-tune changes nearly every weight).
    """
    import hashlib

    given = getattr(model, "anchorlens_fingerprint", None)
    if given:
        return str(given)
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
            sample = flat[::step][:FINGERPRINT_SAMPLES].to("cpu", torch.float64).numpy()
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
            digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# What the methods need to know of the Hugging Face model behind a bridge, read here (and in hooks/) only.
