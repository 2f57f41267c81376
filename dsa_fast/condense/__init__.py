"""DSA dataset condensation: gradient matching with Differentiable Siamese Augmentation.

Library use (the command line is ``python -m dsa_fast.condense``; see docs/condense.md)::

    from dsa_fast.condense import CondenseConfig, condense
    result = condense(CondenseConfig(dataset="MNIST", data_path="data", ipc=10, out="runs/mnist10"))
    result.summary["accuracy_mean"]
"""
from .config import CondenseConfig, main_job_config, resolve
from .data import Dataset, DatasetError, DatasetInfo, load_split, load_tensors, register_dataset
from .dm import dm_loss
from .evaluate import evaluate_set
from .loop import RunDirError, RunInterrupted, RunResult, condense
from .matching import gradient_distance, match_loss
from .methods import Method, RunState, register_method
from .networks import ConvNet, get_network, register_network
from .checkpoint import CheckpointError

__all__ = [
    "CondenseConfig",
    "main_job_config",
    "resolve",
    "condense",
    "Method",
    "RunState",
    "register_method",
    "RunResult",
    "RunDirError",
    "RunInterrupted",
    "CheckpointError",
    "DatasetError",
    "Dataset",
    "DatasetInfo",
    "register_dataset",
    "load_split",
    "load_tensors",
    "evaluate_set",
    "match_loss",
    "dm_loss",
    "gradient_distance",
    "ConvNet",
    "get_network",
    "register_network",
]
