"""The compiled-decoding experiment's cache of fixed capacity computes what tubelet's KVCache does
(checked eagerly: the compile itself takes minutes, and is the experiment's to run)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))


@torch.no_grad()
def test_the_fixed_capacity_cache_gives_the_kv_caches_logits_through_growth_and_crops():
    import compiled_decoding
    from tubelet.generate.models import TubeletLM
    from tubelet.models.decoder import Decoder, DecoderConfig

    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=50, dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  mlp_dim=48)).eval()
    plain, fixed = TubeletLM(model), compiled_decoding.CompiledLM(model, compiled=False)
    tokens = torch.randint(0, 50, (1, 300))
    for lm in (plain, fixed):
        lm.reset(1)
    # a prompt, then calls of 1 and 4 tokens, a crop (a rejected draft), and past the 256 slots
    # the fixed cache starts with (it grows between calls, never inside one)
    for a, b, crop in [(0, 250, None), (250, 251, None), (251, 255, 253), (253, 260, None), (260, 261, None)]:
        x, valid = tokens[:, a:b], torch.tensor([b - a])
        assert torch.allclose(fixed.extend(x, valid), plain.extend(x, valid), atol=1e-5)
        if crop is not None:
            plain.crop(torch.tensor([crop]))
            fixed.crop(torch.tensor([crop]))
    assert fixed.lengths.tolist() == plain.lengths.tolist() == [261]
    assert fixed.cache.keys[0].shape[2] == 512  # grown by doubling


def test_help():
    import subprocess
    script = Path(__file__).resolve().parents[2] / "experiments" / "compiled_decoding.py"
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage:") and "--target" in r.stdout
