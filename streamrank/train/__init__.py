"""Training: losses, metrics, and the offline training loop (the online loop reuses `train_step`)."""

from streamrank.train.metrics import auc, evaluate, log_loss, paired_test, session_metrics
from streamrank.train.offline import (
    ExampleSource,
    FitResult,
    ListSource,
    TrainConfig,
    evaluate_source,
    fit,
    pick_device,
    predict,
    set_seed,
    train_step,
)

__all__ = ["ExampleSource", "FitResult", "ListSource", "TrainConfig", "auc", "evaluate", "evaluate_source",
           "fit", "log_loss", "paired_test", "pick_device", "predict", "session_metrics", "set_seed",
           "train_step"]
