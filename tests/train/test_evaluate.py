"""Multi-view evaluation scores every view of a video and averages the raw logits."""

import torch

from tubelet.data import ClipConfig, ClipSampler, build_datasets, make_loader
from tubelet.train.distributed import Runtime
from tubelet.train.evaluate import evaluate


class Recorder(torch.nn.Module):
    """Logits from each clip's mean pixel, remembering every clip it saw."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(-1, 1, 10))
        self.seen = []

    def forward(self, x):  # (B, C, T, H, W)
        self.seen.append(x.detach().clone())
        return x.mean(dim=(1, 2, 3, 4))[:, None] * self.w


def test_four_views_times_three_crops_averaged_as_logits(tiny_data):
    clip = ClipConfig(num_frames=4, stride=2, size=32, views=4, crops=3)
    _, val = build_datasets(tiny_data, None, clip=clip, seed=0)
    loader = make_loader(val, ClipSampler(len(val), shuffle=False, drop_last=False), batch_size=2, workers=0)
    model = Recorder()
    metrics = evaluate(model, loader, Runtime(), class_splits=(10,), progress=False)
    clips = torch.cat(model.seen)
    assert clips.shape[0] == len(val) * 12  # every video: 4 temporal views x 3 spatial crops
    per_view = (clips.mean(dim=(1, 2, 3, 4))[:, None] * model.w).view(len(val), 12, 10)
    assert torch.allclose(metrics["scores"], per_view.mean(1), atol=1e-6)
    assert metrics["count"] == len(val)
