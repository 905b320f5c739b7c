"""ONNX export of a trained folder, gated on parity with PyTorch: nothing is reported exported that predicts otherwise.

:func:`export_folder` writes ``model.onnx`` (``torch.onnx.export``, dynamic batch axis and sequence axis for text;
BERT- and ViT-family graphs then fused by ONNX Runtime's transformer optimizer), the tokenizer or image processor,
``config.json`` (labels, thresholds, windows) and
``export.json`` (what a non-Python consumer needs, and the parity measured). A CRF folder exports the emission
scores; its ``crf.safetensors`` is copied and Viterbi runs outside the graph, as in PyTorch.

:func:`check_parity` is the gate, also a command of its own (``recipes/verify_onnx.py``): it runs the PyTorch folder
and the ONNX graph on real inputs and refuses (``DataError``: exit 2, one line) when

- fp32: the largest absolute logit difference exceeds ``tolerance``, or any decided label differs;
- int8 (``--quantize int8``, ONNX Runtime dynamic quantization): the metric on labelled input falls by more than
  ``max_metric_drop`` (without labels: more than ``MAX_INT8_DISAGREEMENT`` of the decisions change). Logits of a
  quantized graph differ by design, so they are reported, not gated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from shared.core.errors import DataError
from shared.core.files import atomic_write_json
from shared.deploy.predictors import EXPORT_INFO, ONNX_FILE, Outputs
from shared.ner.crf import CRF_WEIGHTS
from shared.tasks import get_task

logger = logging.getLogger(__name__)

OPSET = 17
DEFAULT_TOLERANCE = 1e-3  # largest |logit difference| fp32 ONNX Runtime may show against PyTorch fp32
DEFAULT_MAX_METRIC_DROP = 0.01  # int8: the metric may fall by at most one point (0.01 on a 0-1 scale)
MAX_INT8_DISAGREEMENT = 0.02  # int8 on unlabelled input: at most 2% of the decisions may change
FLOAT_PARITY, INT8_PARITY = "logits", "metric"



@dataclass(kw_only=True)
class ParityArguments:
    """The parity gate's options, shared by export_onnx.py and verify_onnx.py (each adds its folders and input)."""

    tolerance: float = field(default=DEFAULT_TOLERANCE, metadata={
        "help": "Largest absolute logit difference an fp32 export may show against PyTorch."})
    max_metric_drop: float = field(default=DEFAULT_MAX_METRIC_DROP, metadata={
        "help": "int8 on labelled input: the largest fall of the metric (macro-F1 / entity F1, 0-1) accepted."})
    max_examples: int = field(default=256, metadata={"help": "How many input examples the check runs."})
    batch_size: int = field(default=64, metadata={"help": "Windows / images per forward pass."})

    def __post_init__(self):
        if self.tolerance <= 0 or self.max_metric_drop < 0:
            raise DataError("--tolerance must be positive and --max_metric_drop at least 0")
        if self.max_examples < 1:
            raise DataError(f"--max_examples must be at least 1, got {self.max_examples}")

class _Logits(torch.nn.Module):
    """The model as a graph of positional tensors to logits (what the exporter traces)."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors):
        return self.model(**dict(zip(self.names, tensors))).logits


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 model without adapters: LoRA folders are merged for export (the weights stay as trained)."""
    if hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    return model.float().eval()


def export_graph(model: torch.nn.Module, batch: dict[str, torch.Tensor], path: str) -> list[str]:
    """Write ``model`` as ONNX to ``path``, traced on ``batch`` (real inputs); batch (and sequence) axes dynamic.

    The TorchScript exporter with eager attention gives the graph ONNX Runtime's transformer optimizer can fuse
    (attention, LayerNorm, GELU: :func:`optimize_graph`); the dynamo exporter's decomposed attention is not fused
    and ran no faster than PyTorch here (benchmarks/README.md). Where the TorchScript exporter is gone or fails, the
    dynamo exporter writes the graph instead.
    """
    names = list(batch)
    tensors = tuple(batch[name] for name in names)
    sequence = {name: batch[name].dim() == 2 for name in names}
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")  # the attention pattern the optimizer fuses
        except (ValueError, ImportError):
            pass
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)  # rewrite passes log at INFO; missing torchvision ops warn
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter notes on axis names and deprecations, nothing to act on
        try:
            axes = {name: ({0: "batch", 1: "sequence"} if sequence[name] else {0: "batch"}) for name in names}
            axes["logits"] = {0: "batch", 1: "sequence"} if any(sequence.values()) and _per_token(model) else {0: "batch"}
            torch.onnx.export(_Logits(model, names).eval(), tensors, path, input_names=names, output_names=["logits"],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
            return names
        except Exception as e:  # noqa: BLE001  (any exporter failure: the other exporter gets its turn)
            logger.info("TorchScript exporter failed (%s); using the dynamo exporter", type(e).__name__)
        batch_dim = torch.export.Dim("batch", min=1, max=4096)
        sequence_dim = torch.export.Dim("sequence", min=2, max=8192)
        shapes = tuple({0: batch_dim, **({1: sequence_dim} if sequence[name] else {})} for name in names)
        program = torch.onnx.export(_Logits(model, names).eval(), tensors, None, input_names=names,
                                    output_names=["logits"], dynamic_shapes={"tensors": shapes},
                                    opset_version=OPSET, dynamo=True, verbose=False, report=False, optimize=True)
    program.save(path, external_data=False)
    return names


def _per_token(model: torch.nn.Module) -> bool:
    return type(model).__name__.endswith("ForTokenClassification")


# config.model_type -> the optimizer's model type; others are exported unfused
OPTIMIZER_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert",
                         "electra": "bert", "camembert": "bert", "vit": "vit", "deit": "vit", "dinov2": "vit"}


@contextlib.contextmanager
def scratch_working_directory():
    """Run ONNX Runtime's graph tools in a temporary working directory, removed afterwards: its symbolic shape
    inference saves ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` beside it, in whatever the working directory
    is, when it does not complete (a fixed relative name in onnxruntime.tools.symbolic_shape_infer, no option moves
    it), and the user's folder (a git checkout) must not collect them. Paths given to the tools must be absolute."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="onnx-scratch-") as scratch:
        os.chdir(scratch)
        try:
            yield scratch
        finally:
            os.chdir(cwd)


def optimize_graph(path: str, config) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer on a BERT- or ViT-family graph (fused attention, LayerNorm, GELU), in
    place; the fused operators it made (empty: nothing fused, the graph kept as exported)."""
    model_type = OPTIMIZER_MODEL_TYPES.get(getattr(config, "model_type", None))
    heads, hidden = getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)
    if model_type is None or not heads or not hidden:
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = logging.getLogger()  # the optimizer's modules log every pass at INFO through the root logger
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with scratch_working_directory():  # its fusions run symbolic shape inference
            optimized = optimize_model(os.path.abspath(path), model_type=model_type, num_heads=heads,
                                       hidden_size=hidden)
    except Exception as e:  # noqa: BLE001  (an unfamiliar graph: keep it unfused)
        logger.warning("ONNX Runtime's transformer optimizer skipped (%s)", type(e).__name__)
        return {}
    finally:
        quiet.setLevel(level)
    fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    if fused:
        optimized.save_model_to_file(path)
    return fused


def quantize_int8(source: str, target: str) -> None:
    """ONNX Runtime dynamic quantization: int8 weights of the MatMul/Gemm layers (activations quantized on the fly),
    after ONNX Runtime's recommended pre-processing (shape inference and graph optimisation; the symbolic shape pass
    does not complete on the exporter's dynamic axes, and is skipped)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, target = os.path.abspath(source), os.path.abspath(target)
    root = logging.getLogger()
    level = root.level
    with scratch_working_directory() as scratch:  # the intermediate graph is scratch too
        prepared = os.path.join(scratch, "prepared.onnx")
        try:
            try:
                quant_pre_process(source, prepared, skip_symbolic_shape=True)
                source = prepared
            except Exception as e:  # an optimisation the graph does not allow: quantize the graph as exported
                logger.warning("quantization pre-processing skipped (%s)", str(e).splitlines()[0][:200])
            root.setLevel(logging.WARNING)  # the quantizer logs a line per tensor it leaves in float, on the root
            # DefaultTensorType: outputs of the optimizer's fused operators have no inferred type; they are float
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": 1})
        finally:
            root.setLevel(level)


def logit_difference(reference: Outputs, other: Outputs) -> float:
    """The largest absolute difference between two passes' logits (NER: over every window's positions)."""
    return max((float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))
                for a, b in zip(reference.logits, other.logits) if np.size(a)), default=0.0)


def disagreement(reference: Outputs, other: Outputs) -> float:
    """The share of examples whose decided label (NER: tag sequence) differs."""
    changed = sum(a != b for a, b in zip(reference.labels, other.labels))
    return changed / max(len(reference.labels), 1)


def run(predictor, inputs: tuple) -> Outputs:
    if predictor.task == "ner":
        return predictor.predict(*inputs, with_logits=True)
    return predictor.predict(*inputs)


def check_parity(torch_predictor, onnx_predictor, inputs: tuple, gold: list | None, quantized: bool,
                 tolerance: float = DEFAULT_TOLERANCE, max_metric_drop: float = DEFAULT_MAX_METRIC_DROP,
                 where: str | None = None) -> dict[str, Any]:
    """Compare the PyTorch folder and the ONNX graph on ``inputs``; the report, or a one-line :class:`DataError`."""
    reference, exported = run(torch_predictor, inputs), run(onnx_predictor, inputs)
    report: dict[str, Any] = {
        "examples": len(reference.labels), "gate": INT8_PARITY if quantized else FLOAT_PARITY,
        "max_abs_logit_difference": logit_difference(reference, exported),
        "changed_decisions": disagreement(reference, exported),
    }
    if gold is not None:
        report["metric"] = get_task(torch_predictor.task).metric
        report["metric_pytorch"] = torch_predictor.score(gold, reference)
        report["metric_onnx"] = onnx_predictor.score(gold, exported)
        report["metric_change"] = report["metric_onnx"] - report["metric_pytorch"]
    examples = f"on {report['examples']} example(s)"
    if not quantized:
        if report["max_abs_logit_difference"] > tolerance:
            raise DataError(f"ONNX parity failed {examples}: the largest logit difference from PyTorch is "
                            f"{report['max_abs_logit_difference']:.3g} (tolerance {tolerance:g})", path=where)
        if report["changed_decisions"] > 0:
            raise DataError(f"ONNX parity failed {examples}: {report['changed_decisions']:.1%} of the predictions "
                            "differ from PyTorch", path=where)
    elif gold is not None:
        if report["metric_change"] < -max_metric_drop:
            raise DataError(f"int8 quantization lowers {report['metric']} from {report['metric_pytorch']:.4f} to "
                            f"{report['metric_onnx']:.4f} {examples} (more than --max_metric_drop "
                            f"{max_metric_drop:g}); export without --quantize", path=where)
    elif report["changed_decisions"] > MAX_INT8_DISAGREEMENT:
        raise DataError(f"int8 quantization changes {report['changed_decisions']:.1%} of the predictions {examples} "
                        f"(more than {MAX_INT8_DISAGREEMENT:.0%}; give labelled input to gate on the metric)",
                        path=where)
    return report


def export_info(predictor, input_names: list[str], quantize: str | None, parity: dict) -> dict:
    """``export.json``: what a consumer of ``model.onnx`` needs besides the tokenizer / image processor files."""
    import onnxruntime

    info: dict[str, Any] = {
        "task": predictor.task, "onnx_file": ONNX_FILE, "opset": OPSET, "inputs": input_names, "outputs": ["logits"],
        "quantization": quantize or "none", "onnxruntime_version": onnxruntime.__version__,
    }
    if predictor.task == "ner":
        info.update(labels=predictor.labels, tag_scheme=predictor.scheme, max_length=predictor.max_length,
                    stride=predictor.stride, label_alignment=predictor.alignment,
                    crf=predictor.use_crf, decoding="constrained Viterbi over crf.safetensors" if predictor.use_crf
                    else "argmax per subword; a word takes its first subword's tag")
    else:
        thresholds = predictor.thresholds
        info.update(labels=predictor.labels, multi_label=predictor.multi_label,
                    probabilities="sigmoid" if predictor.multi_label else "softmax",
                    decision_thresholds=None if thresholds is None else
                    (dict(zip(predictor.labels, map(float, np.broadcast_to(thresholds, len(predictor.labels)))))
                     if predictor.multi_label else float(thresholds)))
        if predictor.task == "text_classification":
            long_text = predictor.long_text
            info.update(max_length=predictor.max_length, long_text=long_text.mode, stride=long_text.stride,
                        window_aggregation=long_text.aggregation)
        elif predictor.task in ("assertion_status", "relation_extraction"):  # the markers live in the tokenizer
            info.update(max_length=predictor.max_length, markers=[m for pair in predictor.markers for m in pair],
                        long_sentences="the words nearest the markers are kept")
        else:
            info.update(image_size=predictor.image_size, mean=list(predictor.mean), std=list(predictor.std),
                        resample=predictor.resample, channels="RGB")
    info["parity"] = parity
    return info


def export_folder(torch_predictor, inputs: tuple, gold: list | None, folder: str, quantize: str | None = None,
                  tolerance: float = DEFAULT_TOLERANCE, max_metric_drop: float = DEFAULT_MAX_METRIC_DROP) -> dict:
    """Export ``torch_predictor``'s folder into ``folder`` (an empty staging folder) and gate it on ``inputs``.
    Returns the contents of ``export.json``."""
    task = torch_predictor.task
    model = plain_model(torch_predictor.emissions_model if task == "ner" else torch_predictor.model)
    if task == "ner" and torch_predictor.use_crf:  # the merged model replaces the adapter one in both passes
        torch_predictor.model.model = model
    else:
        torch_predictor._model = model
    batch = torch_predictor.example_batch(*inputs)
    logger.info("exporting %s to ONNX (opset %d)", type(model).__name__, OPSET)
    float_path = os.path.join(folder, ONNX_FILE)
    names = export_graph(model, batch, float_path)
    fused = optimize_graph(float_path, model.config)
    processing = torch_predictor.processor if task == "image_classification" else torch_predictor.tokenizer
    processing.save_pretrained(folder)
    torch_predictor.config.save_pretrained(folder)
    if task == "image_classification":
        torch_predictor.mapping.save(folder)  # DICOM / 16-bit images map to 8 bits as in training
    if task == "ner" and torch_predictor.use_crf:

        shutil.copy2(os.path.join(torch_predictor.model_dir, CRF_WEIGHTS), os.path.join(folder, CRF_WEIGHTS))
    if quantize == "int8":
        quantized = os.path.join(folder, "model.int8.onnx")
        quantize_int8(float_path, quantized)
        os.replace(quantized, float_path)  # the folder holds one graph: what predict --backend onnx runs
    onnx_predictor = type(torch_predictor)(folder, "onnx", torch_predictor.batch_size)
    parity = check_parity(torch_predictor, onnx_predictor, inputs, gold, quantize is not None, tolerance,
                          max_metric_drop)
    info = export_info(torch_predictor, names, quantize, parity)
    info["fused_operators"] = fused

    atomic_write_json(os.path.join(folder, EXPORT_INFO), info)
    return info


def read_export_info(folder: str) -> dict:
    path = os.path.join(folder, EXPORT_INFO)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError:
        raise DataError(f"not an export folder (no {EXPORT_INFO}); write one with recipes/export_onnx.py",
                        path=folder) from None
    except ValueError as e:
        raise DataError(f"cannot read {EXPORT_INFO}: {str(e).splitlines()[0]}", path=folder) from None
