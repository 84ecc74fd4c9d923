"""Write a small cross-layer transcoder with circuit-tracer 0.5.0's own ``CrossLayerTranscoder.to_safetensors``
and its ``forward`` on seeded inputs, for tests/data/attribution/ct_clt/ (see that folder's README line).

Run in circuit-tracer's environment (imports nothing from anchorlens):

    /work/ct-venv/bin/python scripts/make_clt_folder_oracle.py tests/data/attribution/ct_clt

It makes a JumpReLU CLT (3 layers, 8 features, d_model 16, seed 0), saves it, and stores ``x`` [3, 5, 16]
(each layer's input) and circuit-tracer's ``forward(x)`` [3, 5, 16] (each layer's reconstructed MLP output) in
``forward.npz`` beside it, with a config.yaml as its released CLT repositories write one.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder


def main(out: str) -> int:
    out = Path(out)
    torch.manual_seed(0)
    n_layers, n_features, d_model = 3, 8, 16
    clt = CrossLayerTranscoder(n_layers, n_features, d_model, activation_function="jump_relu", lazy_decoder=False,
                               device=torch.device("cpu"), dtype=torch.float32)
    with torch.no_grad():
        clt.W_enc.copy_(torch.randn_like(clt.W_enc) / d_model**0.5)
        clt.b_enc.copy_(torch.randn_like(clt.b_enc) * 0.1)
        clt.b_dec.copy_(torch.randn_like(clt.b_dec) * 0.1)
        clt.activation_function.threshold.copy_(torch.rand_like(clt.activation_function.threshold) * 0.3)
        for w in clt.W_dec:
            w.copy_(torch.randn_like(w) / n_features**0.5)
    clt.to_safetensors(str(out))
    (out / "config.yaml").write_text(yaml.safe_dump({"model_kind": "cross_layer_transcoder",
                                                     "feature_input_hook": "hook_resid_mid",
                                                     "feature_output_hook": "hook_mlp_out"}, sort_keys=False))
    x = torch.randn(n_layers, 5, d_model)
    with torch.no_grad():
        y = clt.forward(x)
        acts = clt.encode(x)
    np.savez(out / "forward.npz", x=x.numpy(), out=y.numpy(), activations=acts.numpy())
    print(f"{out}: active {(acts > 0).float().mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
