"""What a finished run reports: ``summary.json`` (``run_summary``) and the command's last line
(``summary_line``)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .evaluate import mean_std
from .progress import plural


def run_summary(cfg, final: Optional[Dict[str, Any]], baseline: Optional[List[float]], wall_seconds: float,
                condense_seconds: float, processes: Dict[str, Any]) -> Dict[str, Any]:
    """The summary of the run ``cfg`` (its resolved configuration): ``final``, the metrics record of
    the evaluation after the last iteration (None: no evaluation); ``baseline``, the accuracies of
    the random real baseline (None: not evaluated); ``processes``, ``Processes.describe``."""
    bm, bs = mean_std(baseline) if baseline is not None else (None, None)
    return {
        "dataset": cfg.dataset,
        "method": cfg.method,
        "data_source": "embedded MNIST subset" if cfg.data_path is None else cfg.data_path,
        "ipc": cfg.ipc,
        "model": cfg.model,
        "iterations": cfg.iterations,
        "eval_models": cfg.eval_models,
        "eval_epochs": cfg.eval_epochs,
        "accuracy_mean": final["accuracy_mean"] if final else None,
        "accuracy_std": final["accuracy_std"] if final else None,
        "accuracies": final["accuracies"] if final else [],
        "baseline_mean": bm,
        "baseline_std": bs,
        "baseline_accuracies": baseline if baseline is not None else [],
        "wall_seconds": round(wall_seconds, 3),
        "condense_seconds": round(condense_seconds, 3),
        "device": cfg.device,
        "seed": cfg.seed,
        **processes,
    }


def summary_line(s: Dict[str, Any], out: str) -> str:
    """The command's last line for the summary ``s`` of the run in ``out``."""
    if s.get("accuracy_mean") is None:
        return f"condensed set written to {out} (no evaluation)"
    return (f"{s['dataset']} ipc {s['ipc']}, {plural(s['iterations'], 'iteration')}, "
            f"{plural(s['eval_models'], 'model')} x {plural(s['eval_epochs'], 'epoch')}: "
            f"condensed {100 * s['accuracy_mean']:.2f} ± {100 * s['accuracy_std']:.2f} %"
            f"  vs  random real {100 * s['baseline_mean']:.2f} ± {100 * s['baseline_std']:.2f} %"
            f"  ({s['wall_seconds']:.0f} s; outputs in {out})")
