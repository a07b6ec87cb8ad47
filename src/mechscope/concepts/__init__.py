"""Reading and writing concepts: linear probes and their datasets, control vectors and steering,
representation geometry (word vectors, relations, weight tying)."""
