"""labelwise from Python, offline: train on the bundled sample data, load the model, label texts.

    python docs/quickstart.py                 # a short run (debug=limit: a few batches), about a minute on a CPU
    python docs/quickstart.py trainer.max_epochs=6 debug=null    # any src.train override, e.g. a full run

Everything here is also a command: `python -m src.train`, `python -m src.predict`, `python -m src.export`.
"""

import sys

from src.api import load, predict, train

# 1. Train: the same configs and overrides as `python -m src.train ...`; prints the metrics table and returns the
#    run summary (summary.json).
summary = train(["debug=limit", "trainer.enable_progress_bar=false", *sys.argv[1:]])

# 2. Load the trained model (a checkpoint, or a directory written by `python -m src.export`) and label texts with
#    its tuned decision thresholds.
model = load(summary["best_checkpoint"])
print("labels:", ", ".join(model.labels.names))
for record in model.predict(["I can't stop smiling, best day in years!", "They lied to us again. Unbelievable."]):
    print(record["labels"], record["text"])

# 3. Or load and predict in one call; scores are per-label probabilities.
(record,) = predict(["The noise downstairs at 3 a.m. made my heart race."], summary["best_checkpoint"])
print({label: round(score, 3) for label, score in record["scores"].items()})
