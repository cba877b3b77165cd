"""python -m src.demo ckpt_path=PATH [port=7860]: a web page to try a trained model (Gradio, ``pip install -e
".[demo]"``).

A text box; every label's score as a bar; the labels the model decides; the decision thresholds shown as sliders, so
a colleague can explore the operating point (raise a label's threshold for precision, lower it for recall) without
running the model again; and a few texts of the run's validation split to try with one click. It serves on
127.0.0.1 unless told otherwise (the page has no authentication).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from src import resolvers
from src.errors import ConfigError, LabelwiseError, reported_to_user
from src.inference import Predictor
from src.metrics.thresholds import Thresholds
from src.schema import app, validate

resolvers.register()


def pick_examples(texts: list[str], targets: np.ndarray, count: int) -> list[str]:
    """Up to ``count`` texts that between them show as many different labels as possible (each next text adds a
    label not shown yet while it can), shortest first among equals, so the examples read quickly."""
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    chosen: list[int] = []
    shown = np.zeros(targets.shape[1], dtype=bool)
    for i in order:
        if len(chosen) < count and (targets[i].astype(bool) & ~shown).any():
            chosen.append(i)
            shown |= targets[i].astype(bool)
    chosen += [i for i in order if i not in chosen][: count - len(chosen)]
    return [texts[i] for i in chosen]


def validation_examples(predictor: Predictor, count: int) -> tuple[list[str], str | None]:
    """Examples from the run's validation split, or none and why."""
    if count <= 0:
        return [], None
    try:
        texts, targets = predictor.validation_split()
    except LabelwiseError as error:
        return [], f"No examples: {error}"
    return pick_examples(texts, targets, count), None


def decision_text(names: tuple[str, ...], decisions: np.ndarray) -> str:
    chosen = [name for name, on in zip(names, decisions) if on]
    return "**Decision:** " + (", ".join(chosen) if chosen else "no label")


def build_app(predictor: Predictor, examples: list[str], note: str | None = None):
    """The Gradio Blocks app (not launched)."""
    import gradio as gr

    space, stored = predictor.labels, predictor.thresholds
    names = space.names
    header = (f"## labelwise: {space.task} classifier, {space.num_labels} labels\n"
              f"Base model `{predictor.net.config.base_model}`. Type a text and press **Label it**.")

    def decide(probabilities: list[float] | None, *controls) -> str:
        if probabilities is None:
            return ""
        scores = np.asarray([probabilities])
        if not space.thresholded:
            return decision_text(names, space.decide(scores)[0])
        *cut, at_least_one = controls
        rule = Thresholds(global_threshold=stored.global_threshold if stored else 0.5, per_label=list(cut),
                          shrinkage=stored.shrinkage if stored else 0.0, at_least_one=bool(at_least_one))
        return decision_text(names, space.decide(scores, rule)[0])

    def score(text: str, *controls):
        if not text or not text.strip():
            return {}, None, "Type a text first."
        probabilities = predictor.scores([text])[0].tolist()
        return dict(zip(names, probabilities)), probabilities, decide(probabilities, *controls)

    with gr.Blocks(title="labelwise demo") as app:
        gr.Markdown(header)
        text = gr.Textbox(label="Text", lines=4, placeholder="Type or paste a text to label")
        run = gr.Button("Label it", variant="primary")
        with gr.Row():
            bars = gr.Label(label="Scores", num_top_classes=space.num_labels)
            decision = gr.Markdown(elem_id="decision")
        last = gr.State(None)
        controls: list = []
        if space.thresholded:
            with gr.Accordion("Decision thresholds: a label is decided when its score is above its threshold",
                              open=True):
                cut = stored.per_label if stored else [0.5] * space.num_labels
                controls = [gr.Slider(0.0, 1.0, value=round(value, 3), step=0.01, label=name)
                            for name, value in zip(names, cut)]
                controls.append(gr.Checkbox(value=bool(stored and stored.at_least_one),
                                            label="at least one label (the top one when none passes)"))
                reset = gr.Button("Back to the model's thresholds")
            reset.click(lambda: [round(value, 3) for value in cut] + [bool(stored and stored.at_least_one)],
                        outputs=controls)
            for control in controls:
                control.change(decide, [last, *controls], decision)
        else:
            gr.Markdown("Multi-class: the decision is the label with the highest score.")
        run.click(score, [text, *controls], [bars, last, decision])
        text.submit(score, [text, *controls], [bars, last, decision])
        if examples:
            gr.Examples([[example] for example in examples], inputs=[text], label="Examples from the validation split")
        elif note:
            gr.Markdown(note)
    return app


def demo(cfg: DictConfig, launch: bool = True):
    if importlib.util.find_spec("gradio") is None:
        raise ConfigError('src.demo needs the optional Gradio package: pip install -e ".[demo]"')
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path= is required: pass ckpt_path=<run dir>/checkpoints/best-*.ckpt (or an export "
                          "directory).")
    predictor = Predictor.load(to_absolute_path(str(cfg.ckpt_path)), cfg.engine, cfg.quantize)
    app = build_app(predictor, *validation_examples(predictor, int(cfg.examples)))
    if launch:
        app.launch(server_name=cfg.host, server_port=cfg.port, show_error=True)
    return app


@app("demo")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    with reported_to_user():
        validate(cfg, "demo")
        demo(cfg)


if __name__ == "__main__":
    main()
