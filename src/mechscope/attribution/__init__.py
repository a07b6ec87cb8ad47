"""Attribution: gradients (saliency, grad × input, integrated gradients, layer attribution,
conductance, Grad-CAM) and perturbations (occlusion, LIME, KernelSHAP, exact Shapley) — for token models and
for any callable. Every method returns an ``Attribution`` (or ``SiteAttribution``) result; the
numeric estimators under them (``shapley_values``, ``kernel_shap_values``, ``lime_weights``,
``occlusion_values``) return plain arrays."""

from .gradients import gradcam, grad_x_input, layer_attribution, layer_conductance, saliency, token_ig
from .integrate import integrated_gradients, rule
from .perturbation import (exact_shapley, kernel_shap, kernel_shap_values, lime, lime_weights, occlusion,
                           occlusion_values, shapley_values, tabular_value_fn, token_perturbation)
from .result import Attribution

__all__ = ["Attribution", "exact_shapley", "grad_x_input", "gradcam", "integrated_gradients", "kernel_shap",
           "kernel_shap_values", "layer_attribution", "layer_conductance", "lime", "lime_weights", "occlusion",
           "occlusion_values", "rule", "saliency", "shapley_values", "tabular_value_fn", "token_ig", "token_perturbation"]
