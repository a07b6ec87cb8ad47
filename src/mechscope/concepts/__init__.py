"""Reading and writing concepts: linear probes and their datasets, control vectors and steering,
representation geometry (word vectors, relations, weight tying)."""

from .datasets import ProbeDataset, function_word_dataset, sentiment_dataset, truth_dataset
from .geometry import RelationGeometry, WeightTying, WordVectors, glove, model_vectors, relation_geometry, weight_tying
from .probes import LinearProbe, ProbeSweep, control_labels, probe_sweep
from .steering import (ControlVector, SteeredGeneration, SteeringSweep, control_vector, direction_from_differences,
                       directional_ablation, steering_sweep)

__all__ = ["ControlVector", "LinearProbe", "ProbeDataset", "ProbeSweep", "RelationGeometry", "SteeredGeneration",
           "SteeringSweep", "WeightTying", "WordVectors", "control_labels", "control_vector", "direction_from_differences",
           "directional_ablation", "function_word_dataset", "glove", "model_vectors", "probe_sweep", "relation_geometry",
           "sentiment_dataset", "steering_sweep", "truth_dataset", "weight_tying"]
