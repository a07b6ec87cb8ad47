"""The EfficientNet-Lite0 specimen: what the network sees in the bundled cat photo and which
channels carry it.

Findings, in order: the top classes of the bundled photos; Grad-CAM, SmoothGrad-IG and occlusion
for the cat's class; zero-ablating each channel of the last MBConv block (``_blocks.15``) on the
photos; the most needed channel's feature visualization (with its best natural images), and the
channels of the block before that feed it most (its 1 × 1 projection's weights).
"""

from __future__ import annotations

import torch

from ..vision.attribution import image_ig, occlusion
from ..vision.cam import grad_cam
from ..vision.channels import channel_ablation, channel_weights, top_examples
from ..vision.featurevis import visualize
from ..vision.images import PHOTOS, photo, prepare
from ..vision.model import ImageModel

SITE = "_blocks.15"


def vision_specimen(model: ImageModel, archive, *, steps: int = 128, photos: tuple[str, ...] = PHOTOS,
                    progress: bool = True):
    """Run the analyses above and record them as the specimen ``"efficientnet-lite0: the cat"``
    (channel ablation on ``photos``: 320 channels × photos rows of 224 px images)."""
    names = photos
    cat = prepare(photo("chelsea"), model.size, crop=False)
    photos = torch.cat([prepare(photo(p), model.size, crop=False) for p in names])
    tops = model.run(photos).top(1)
    lines = [f"{p}: {t[0][0].split(',')[0]} ({t[0][1]:.2f})" for p, t in zip(names, tops)]
    findings = []
    cam = grad_cam(model, cat)
    findings.append((cam, f"Grad-CAM at _bn1 for the top class. Top classes of the bundled photos: {'; '.join(lines)}."))
    findings.append((image_ig(model, cat, cam.target, steps=16, smooth=4, baseline="black"),
                     "Integrated gradients from a black image, averaged over 4 noisy copies (σ 0.15)."))
    findings.append((occlusion(model, cat, cam.target, window=56, stride=28),
                     "Occluding 56-px patches with grey: where the logit drops."))
    abl = channel_ablation(model, photos, SITE, batch_size=16, progress=progress)
    best = abl.top(1)[0][0]
    findings.append((abl, f"Zero-ablating one channel of {SITE} at a time on the {len(names)} photos: channel {best} "
                          "matters most."))
    fv = visualize(model, f"{SITE}:{best}", steps=steps, progress=progress)
    ex = top_examples(model, f"{SITE}:{best}", photos, k=3)
    feeders = channel_weights(model, f"{SITE}._project_conv", best, k=5)
    findings.append((fv, f"Channel {best} of {SITE}, maximised ({fv.ratio:.1f}× the best bundled photo). Its strongest photos: "
                         + ", ".join(f"{names[i]} ({a:.2f} at {rc})" for i, a, rc in ex)
                         + ". Its 1×1 projection reads expanded channels "
                         + ", ".join(f"{c} ({w:+.2f})" for c, w in feeders) + "."))
    spec = archive.record(f"{model.name}: the cat", findings, model=model, task="image classification",
                          dataset="scikit-image photos",
                          description="EfficientNet-Lite0 on scikit-image's bundled photos: where it looks for the "
                                      "cat, and the channels of its last block that carry the prediction.",
                          tags=["vision"])
    return spec
