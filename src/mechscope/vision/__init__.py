"""Image models: named sites and channels, run / cache / interventions, Grad-CAM, integrated
gradients with smoothing, occlusion, feature visualization, channel ablation and weights."""

from .attribution import image_ig, occlusion
from .cam import ImageAttribution, grad_cam
from .channels import ChannelAblation, channel_ablation, channel_weights, top_examples
from .featurevis import FeatureVisualization, visualize
from .images import PHOTOS, photo, prepare, read_image
from .model import ImageModel, ImageRun, VisionSiteError
from .zoo import efficientnet_lite0, imagenet_classes, load_image_model

__all__ = ["ChannelAblation", "FeatureVisualization", "ImageAttribution", "ImageModel", "ImageRun", "PHOTOS", "VisionSiteError", "efficientnet_lite0",
           "grad_cam", "image_ig", "imagenet_classes", "load_image_model", "occlusion", "photo", "prepare",
           "read_image", "channel_ablation", "channel_weights", "top_examples", "visualize"]
