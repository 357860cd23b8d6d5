"""The compact network of a run: saved by the runner, rebuilt without pickled modules, exported.

After fine-tuning, the runner saves the final network as
``checkpoints/compact-RUN_ID.pt``: a list of layer specifications of the flat
Sequential (type, name and constructor arguments) beside its state dict.
``load_compact`` rebuilds it with ``torch.load(weights_only=True)``, so no
code is unpickled, and ``export_run`` writes it as a state dict, TorchScript
or ONNX file with a small JSON of its architecture and metrics beside it.

File sizes in records are those of ``torch.save(model.state_dict())``:
``state_dict_bytes`` for every network, and ``sparse_state_dict_bytes`` for a
masked one with each weight of its Linear and Conv2d layers stored as a CSR
matrix with 32-bit indices.

NOTE: a masked network (magnitude pruning) keeps its dense tensors, so its
``state_dict_bytes`` equals the dense network's; only the sparse storage
shrinks the file.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from benchmarks.structure import FeatureSelect

logger = logging.getLogger(__name__)

COMPACT_KIND = "compact"
COMPACT_VERSION = 1
Format = Literal["state_dict", "torchscript", "onnx"]
FORMATS: tuple[str, ...] = ("state_dict", "torchscript", "onnx")

_BATCHNORM_ARGS = ("num_features", "eps", "momentum", "affine", "track_running_stats")
_INPLACE = ("inplace",)
# Exact layer type -> (class, constructor arguments read from the module's attributes of the same name).
LAYER_TYPES: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "Conv2d": (nn.Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                           "padding_mode")),
    "BatchNorm1d": (nn.BatchNorm1d, _BATCHNORM_ARGS),
    "BatchNorm2d": (nn.BatchNorm2d, _BATCHNORM_ARGS),
    "MaxPool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "AvgPool2d": (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                 "divisor_override")),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "ReLU": (nn.ReLU, _INPLACE),
    "ReLU6": (nn.ReLU6, _INPLACE),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope", "inplace")),
    "ELU": (nn.ELU, ("alpha", "inplace")),
    "GELU": (nn.GELU, ("approximate",)),
    "SiLU": (nn.SiLU, _INPLACE),
    "Tanh": (nn.Tanh, ()),
    "Sigmoid": (nn.Sigmoid, ()),
    "Identity": (nn.Identity, ()),
    "Dropout": (nn.Dropout, ("p", "inplace")),
    "Dropout2d": (nn.Dropout2d, ("p", "inplace")),
}
# Metrics copied from the record into the JSON beside an exported file.
EXPORTED_METRICS = ("test_error_pct", "val_error_pct", "params", "dense_params", "params_fraction", "flops_fvcore",
                    "dense_flops_fvcore", "flops_fraction", "file_bytes", "dense_file_bytes", "sparse_file_bytes",
                    "widths", "dense_widths")


class ExportError(ValueError):
    """A network, checkpoint or run that cannot be saved, loaded or exported; the message gives the reason."""


def layer_specs(model: nn.Sequential) -> list[dict[str, Any]]:
    """Return one specification per layer of a flat Sequential: its name, type and constructor arguments.

    Raises:
        ExportError: for a model that is not a flat ``nn.Sequential`` or a
            layer whose exact type is not in ``LAYER_TYPES`` (or
            ``FeatureSelect``), naming the layer.

    Example:
        >>> layer_specs(nn.Sequential(nn.Linear(4, 2)))
        [{'name': '0', 'type': 'Linear', 'in_features': 4, 'out_features': 2, 'bias': True}]
    """
    if type(model) is not nn.Sequential:
        raise ExportError(f"export needs a flat nn.Sequential, got {type(model).__name__}")
    specs = []
    for name, module in model.named_children():
        kind = type(module).__name__
        spec: dict[str, Any] = {"name": name, "type": kind}
        if type(module) is FeatureSelect:
            spec.update(kept=module.index.numel(), in_features=module.in_features)
        elif kind in LAYER_TYPES and type(module) is LAYER_TYPES[kind][0]:
            spec.update({arg: getattr(module, arg) for arg in LAYER_TYPES[kind][1]})
            if kind in ("Linear", "Conv2d"):
                spec["bias"] = module.bias is not None
        else:
            supported = ", ".join([*LAYER_TYPES, "FeatureSelect"])
            raise ExportError(f"layer {name!r} is a {kind}, which export cannot describe; supported layers: {supported}")
        specs.append(spec)
    return specs


def build_from_specs(specs: list[dict[str, Any]]) -> nn.Sequential:
    """Return a freshly initialised Sequential with the layers that ``specs`` describe.

    Raises:
        ExportError: for an unknown layer type.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for spec in specs:
        arguments = {key: tuple(value) if isinstance(value, list) else value
                     for key, value in spec.items() if key not in ("name", "type")}
        kind = spec["type"]
        if kind == "FeatureSelect":
            layers[spec["name"]] = FeatureSelect(torch.zeros(arguments["kept"], dtype=torch.long),
                                                 in_features=arguments["in_features"])
        elif kind in LAYER_TYPES:
            layers[spec["name"]] = LAYER_TYPES[kind][0](**arguments)
        else:
            raise ExportError(f"layer {spec['name']!r} has unknown type {kind!r}; it was saved by a newer vibbench")
    return nn.Sequential(layers)


def compact_checkpoint(model: nn.Sequential, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Return the architecture and CPU weights of ``model``, made of plain tensors and containers only."""
    return {
        "format_version": COMPACT_VERSION,
        "input_shape": list(input_shape),
        "layers": layer_specs(model),
        "state": {key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
    }


def load_compact(path: str | Path) -> nn.Sequential:
    """Rebuild a compact network saved by the runner or by ``vibbench export --format state_dict``.

    The file is read with ``torch.load(weights_only=True)``; the network is
    built from its layer specifications and returned in evaluation mode on
    the CPU.

    Raises:
        ExportError: for a missing file or one that is not a compact network.

    Example:
        >>> model = load_compact("results/quick/checkpoints/compact-0123456789abcdef.pt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"compact network {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a bad file
        raise ExportError(f"{path} does not load with weights_only=True: {type(error).__name__}: {error}") from error
    return _model_from_payload(payload, path)


def _model_from_payload(payload: Any, path: Path) -> nn.Sequential:
    """Return the network that a loaded compact checkpoint describes, in evaluation mode."""
    if not isinstance(payload, dict) or not {"layers", "state"} <= set(payload):
        raise ExportError(f"{path} is not a compact network (no 'layers' and 'state'); give a compact-RUN_ID.pt file")
    model = build_from_specs(payload["layers"])
    try:
        model.load_state_dict(payload["state"])
    except RuntimeError as error:
        raise ExportError(f"{path}: the weights do not fit the saved layers: {error}") from error
    return model.eval()


def state_dict_bytes(model: nn.Module) -> int:
    """Return the size in bytes of ``torch.save(model.state_dict())``.

    Example:
        >>> state_dict_bytes(nn.Linear(256, 256)) > 256 * 256 * 4
        True
    """
    buffer = io.BytesIO()
    torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, buffer)
    return buffer.getbuffer().nbytes


def sparse_state_dict_bytes(model: nn.Module) -> int:
    """Return the size in bytes of the state dict with each Linear and Conv2d weight stored sparse.

    Each such weight is saved as a CSR matrix (rows = output units, 32-bit
    indices) of its non-zero entries; other tensors stay dense. This is what
    a masked network's file needs; the dense tensors in memory do not shrink.
    """
    sparse_keys = {f"{name}.weight" if name else "weight" for name, module in model.named_modules()
                   if isinstance(module, (nn.Linear, nn.Conv2d))}
    state = {}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch flags its sparse CSR layout as beta; building and saving it is all that is done here.
        warnings.simplefilter("ignore", UserWarning)
        for key, value in model.state_dict().items():
            value = value.detach().cpu()
            if key in sparse_keys:
                csr = value.reshape(value.shape[0], -1).to_sparse_csr()
                value = torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32),
                                                csr.values(), csr.shape)
            state[key] = value
        torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def export_network(model: nn.Sequential, input_shape: tuple[int, ...], fmt: Format, output: Path) -> None:
    """Write ``model`` to ``output`` as a state dict (``load_compact`` reads it), TorchScript or ONNX.

    The ONNX and TorchScript files take a batch of images of
    ``input_shape`` (any batch size) and return logits; ONNX names them
    ``images`` and ``logits``.

    Raises:
        ExportError: for an unknown format, or ONNX without the ``onnx`` and
            ``onnxscript`` packages.
    """
    model = model.cpu().eval()
    # Two images, so torch.export keeps the batch dimension symbolic instead of fixing it to 1.
    example = torch.zeros(2, *input_shape)
    if fmt == "state_dict":
        torch.save(compact_checkpoint(model, input_shape), output)
    elif fmt == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            # NOTE: torch 2.14 marks TorchScript as deprecated; the format is kept for runtimes that load it.
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.trace(model, example), str(output))
    elif fmt == "onnx":
        _export_onnx(model, example, output)
    else:
        raise ExportError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")


def _export_onnx(model: nn.Sequential, example: torch.Tensor, output: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(f"ONNX export needs the onnx and onnxscript packages ({error}); "
                          "install them with pip install 'vibbench[dev]' or pip install onnx onnxscript") from error
    batch = torch.export.Dim("batch", min=1)
    try:
        # One self-contained file: the weights go inside the model, not into OUTPUT.data.
        torch.onnx.export(model, (example,), str(output), dynamo=True, verbose=False, external_data=False,
                          input_names=["images"], output_names=["logits"], dynamic_shapes=({0: batch},))
    except Exception as error:  # the exporter raises many types; the network and torch version explain them
        raise ExportError(f"torch.onnx.export failed for this network: {type(error).__name__}: {error}; "
                          "export --format state_dict or torchscript instead") from error


def export_run(results_dir: Path, run_id: str, fmt: Format, output: Path) -> Path:
    """Export the compact network of run ``run_id`` (or a unique prefix of it) and write its JSON beside it.

    The JSON (``OUTPUT.json``) contains the run's configuration, the layer
    specifications, the input shape, the exported file's size and the
    record's metrics named in ``EXPORTED_METRICS``. Returns the JSON's path.

    Raises:
        ExportError: for an unknown or unfinished run, or a run whose compact
            network was not saved (records from before this feature, or a
            deleted checkpoints folder).
    """
    from benchmarks.store import ResultsStore

    store = ResultsStore(Path(results_dir))
    record = _find_record(store, run_id)
    run_id = record["run_id"]
    path = store.checkpoint_path(COMPACT_KIND, run_id)
    if not path.is_file():
        raise ExportError(f"run {run_id} has no saved compact network ({path} is missing); delete "
                          f"{store.record_path(run_id)} and run its suite again to train and save it")
    payload = store.load_checkpoint(COMPACT_KIND, run_id)
    if payload is None:
        raise ExportError(f"{path} is not the compact network of run {run_id}; see the warning above")
    model = _model_from_payload(payload, path)
    input_shape = tuple(payload["input_shape"])

    output = Path(output)
    if output.is_dir():
        raise ExportError(f"--output {str(output)!r} is a folder; give a file name such as {output / 'model.onnx'}")
    output.parent.mkdir(parents=True, exist_ok=True)
    export_network(model, input_shape, fmt, output)
    config = record["config"]
    summary = {
        "run_id": run_id,
        "format": fmt,
        "file": output.name,
        "file_bytes": output.stat().st_size,
        "input_shape": list(input_shape),
        "layers": payload["layers"],
        "config": {key: config.get(key) for key in ("model", "dataset", "method", "params", "target", "seed")},
        "metrics": {key: record["metrics"][key] for key in EXPORTED_METRICS if key in record.get("metrics", {})},
        "torch": torch.__version__,
    }
    summary_path = output.with_name(output.name + ".json")
    summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    logger.debug("exported run %s (%s) to %s and %s", run_id, fmt, output, summary_path)
    return summary_path


def _find_record(store, run_id: str) -> dict[str, Any]:
    """Return the finished record whose id is ``run_id`` or starts with it (at least 4 characters)."""
    if len(run_id) < 4:
        raise ExportError(f"run id {run_id!r} is too short; give at least 4 characters of the id")
    if not store.runs_dir.is_dir():
        raise ExportError(f"{store.root} has no runs/ folder; give the --results-dir that `vibbench run` wrote")
    matches = sorted(path.stem for path in store.runs_dir.glob(f"{run_id}*.json"))
    if not matches:
        raise ExportError(f"no run {run_id!r} in {store.runs_dir}; the run ids are the file names there")
    if len(matches) > 1:
        raise ExportError(f"run id {run_id!r} matches {len(matches)} runs ({', '.join(matches[:5])}); give more characters")
    record = store.read(matches[0])
    if record is None or record.get("status") != "ok":
        status = record.get("status") if record else "unreadable"
        raise ExportError(f"run {matches[0]} has status {status!r}; only a finished run has a network to export")
    return record
