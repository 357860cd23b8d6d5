"""Suite files: a validated schema, and the expansion of a suite into runs.

A suite names models, a dataset, methods (with parameters and optional
strength sweeps), seeds, compression targets and one training budget that
every method shares. ``RunConfig`` is one run; its canonical JSON is hashed
into the run's id, so a finished run is found and skipped.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
from pathlib import Path
import typing
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmarks.registry import DATASETS, METHODS, MODELS

SUITES_DIR = Path(__file__).parent / "suites"


class SuiteError(ValueError):
    """A suite file that cannot be used; ``str()`` is one line per problem, naming the field."""


class Strict(BaseModel):
    # inf and nan are rejected: no budget or measurement setting means anything with them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Bounds that catch typos (an extra zero too many) before they cost compute.
MAX_EPOCHS = 100_000
MAX_SEED = 2**63 - 1  # torch.manual_seed accepts a 64-bit seed


class Optimizer(Strict):
    name: Literal["adam", "sgd"] = Field("adam", description="optimizer for every phase")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by Adam)")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")
    schedule: Literal["constant", "cosine", "step"] = Field(
        "constant", description="learning-rate schedule within each phase; step divides by 10 at 50 % and 75 %"
    )


class Budget(Strict):
    """The training budget every method gets: epochs per phase, batch size, optimizer."""

    dense_epochs: int = Field(ge=0, le=MAX_EPOCHS, description="epochs of dense pre-training (cached per model, dataset, seed)")
    sparsify_epochs: int = Field(ge=0, le=MAX_EPOCHS, description="epochs with the method's penalty or pruning schedule")
    finetune_epochs: int = Field(ge=0, le=MAX_EPOCHS, description="epochs of fine-tuning the pruned network")
    batch_size: int = Field(100, ge=1, description="training batch size")
    optimizer: Optimizer = Optimizer()
    max_batches_per_epoch: int | None = Field(
        None, ge=1, description="stop each epoch after this many batches (smoke tests only)"
    )

    @property
    def total_epochs(self) -> int:
        return self.dense_epochs + self.sparsify_epochs + self.finetune_epochs


class Targets(Strict):
    """Compression targets as fractions of the dense network's cost."""

    flops: list[float] = Field(default_factory=list, description="fractions of dense FLOPs to prune to")
    params: list[float] = Field(default_factory=list, description="fractions of dense parameters to prune to")

    @field_validator("flops", "params")
    @classmethod
    def _in_unit_interval(cls, values: list[float]) -> list[float]:
        for value in values:
            if not 0.0 < value <= 1.0:
                raise ValueError(f"target {value} is outside (0, 1]; give a fraction of the dense network such as 0.25")
        return values


class MethodEntry(Strict):
    name: str = Field(description="registered method name")
    params: dict[str, Any] = Field(default_factory=dict, description="method parameters")
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="parameter -> values; one operating point per value"
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="model name -> parameters that replace params for that model"
    )


class Measure(Strict):
    latency_batch_sizes: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        default_factory=lambda: [1, 64], description="batch sizes to time"
    )
    min_run_time_s: float = Field(0.2, gt=0, le=3600, description="seconds of timed forward passes per batch size")
    threads: int = Field(1, ge=1, le=1024, description="CPU threads while timing")


class Resources(Strict):
    """Resources one run requests from a cluster scheduler (Ray, Slurm)."""

    cpus_per_run: float = Field(1.0, gt=0, description="CPUs per run")
    gpus_per_run: float = Field(0.0, ge=0, description="GPUs per run (fractions share a GPU under Ray)")
    slurm_partition: str | None = Field(None, description="Slurm partition")
    slurm_time_minutes: int = Field(60, ge=1, description="Slurm time limit per run, minutes")


class Suite(Strict):
    # The name becomes the default results folder, results/NAME, so it is one plain path component.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    plugins: list[str] = Field(
        default_factory=list, validate_default=True,
        description="modules to import before the names are checked, each registering models, datasets or methods",
    )
    dataset: str = Field("mnist5k", description="registered dataset name")
    dataset_options: dict[str, Any] = Field(default_factory=dict, description="options passed to the dataset loader")
    models: list[str] = Field(min_length=1)
    methods: list[MethodEntry] = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0], min_length=1)
    budget: Budget
    targets: Targets = Targets()
    ranking: Literal["global", "layer_normalized", "uniform"] = Field(
        "global", description="how unit scores of different layers are compared when pruning to a target"
    )
    measure: Measure = Measure()
    resources: Resources = Resources()

    @field_validator("plugins")
    @classmethod
    def _load_plugins(cls, modules: list[str]) -> list[str]:
        # Entry points and the listed modules register their names before _known_names checks them.
        from benchmarks.plugins import PluginError, load_module_plugin, load_plugins

        load_plugins()
        problems = []
        for i, module in enumerate(modules):
            try:
                load_module_plugin(module)
            except PluginError as error:
                problems.append(f"plugins[{i}]: {error}")
        if problems:
            raise ValueError("; ".join(problems))
        return modules

    @model_validator(mode="after")
    def _known_names(self) -> "Suite":
        problems = []
        repeated = sorted({seed for seed in self.seeds if self.seeds.count(seed) > 1})
        if repeated:
            problems.append(f"seeds: {repeated} given more than once; list each seed once")
        if self.dataset not in DATASETS:
            problems.append(_unknown("dataset", "dataset", self.dataset, DATASETS.names()))
        for i, model in enumerate(self.models):
            if model not in MODELS:
                problems.append(_unknown(f"models[{i}]", "model", model, MODELS.names()))
        for i, entry in enumerate(self.methods):
            if entry.name not in METHODS:
                problems.append(_unknown(f"methods[{i}].name", "method", entry.name, METHODS.names()))
                continue
            method_class = METHODS.get(entry.name)
            allowed = set(method_class.Params.model_fields)
            keys = [("params", k) for k in entry.params] + [("sweep", k) for k in entry.sweep]
            keys += [(f"overrides.{m}", k) for m, params in entry.overrides.items() for k in params]
            for where, key in keys:
                if key not in allowed:
                    problems.append(_unknown(f"methods[{i}].{where}.{key}", f"{entry.name} parameter", key, sorted(allowed)))
            for model in entry.overrides:
                if model not in self.models:
                    problems.append(f"methods[{i}].overrides.{model}: model {model!r} is not in this suite's models")
            problems += _check_params(i, entry, method_class)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _check_params(index: int, entry: "MethodEntry", method_class) -> list[str]:
    """Validate every parameter combination of a method entry; return one message per problem."""
    allowed = set(method_class.Params.model_fields)
    if any(key not in allowed for key in [*entry.params, *entry.sweep]):
        return []  # already reported as unknown keys
    problems = []
    candidates = [("params", dict(entry.params))]
    for key, values in entry.sweep.items():
        if not values:
            problems.append(f"methods[{index}].sweep.{key}: empty list; give at least one value")
        for j, value in enumerate(values):
            candidates.append((f"sweep.{key}[{j}]", {**entry.params, key: value}))
    for where, params in candidates:
        try:
            method_class.Params(**params)
        except ValidationError as error:
            for detail in error.errors():
                field = ".".join(str(part) for part in detail["loc"])
                problems.append(
                    f"methods[{index}].{where}: {entry.name} parameter {field}: {detail['msg']} (got {detail.get('input')!r})"
                )
    return problems


def _unknown(where: str, kind: str, value: str, valid: list[str]) -> str:
    shown = _shorten(repr(value), 80)
    if not valid:
        return f"{where}: unknown {kind} {shown}; this takes no parameters, so remove it"
    close = difflib.get_close_matches(str(value), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown {kind} {shown}{hint}; valid values: {', '.join(valid)}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping (the last would win silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}; give each field once", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _shorten(text: str, limit: int = 300) -> str:
    """Return ``text`` cut to ``limit`` characters, so an error stays one readable line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_suite_path(name_or_path: str) -> Path:
    """Return the suite file for a built-in suite name (``quick``) or a path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return SUITES_DIR / f"{name_or_path}.yaml"


def builtin_suites() -> list[str]:
    """Return the names of the suites shipped with the package."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    """Read and validate a suite; raise ``SuiteError`` listing every problem with its location."""
    path = resolve_suite_path(name_or_path)
    if not path.exists():
        raise SuiteError(f"suite {name_or_path!r} not found; give a path to a YAML file or one of: {', '.join(builtin_suites())}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as error:
        raise SuiteError(f"{path}: malformed YAML: {_shorten(' '.join(str(error).split()))}") from error
    except ValueError as error:  # PyYAML passes up int()'s limit on very long numbers
        raise SuiteError(f"{path}: invalid value in the YAML: {_shorten(str(error))}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise SuiteError(f"{path}: cannot read the suite file: {error}") from error
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite file must be a mapping of fields such as models, methods and budget")
    raw.setdefault("name", path.stem)
    try:
        return Suite(**raw)
    except ValidationError as error:
        problems = [_format_error(e) for e in error.errors()]
        # Suite._known_names runs only when every field is valid, so check the names here too.
        if not any(e["loc"] == () for e in error.errors()):
            problems += _raw_name_problems(raw)
        raise SuiteError(f"{path}: " + "; ".join(problems)) from error


def _raw_name_problems(raw: dict) -> list[str]:
    """Return the unknown dataset, model, method and parameter names of a raw suite mapping."""
    problems = []
    dataset = raw.get("dataset")
    if isinstance(dataset, str) and dataset not in DATASETS:
        problems.append(_unknown("dataset", "dataset", dataset, DATASETS.names()))
    models = raw.get("models")
    for i, model in enumerate(models if isinstance(models, list) else []):
        if isinstance(model, str) and model not in MODELS:
            problems.append(_unknown(f"models[{i}]", "model", model, MODELS.names()))
    methods = raw.get("methods")
    for i, entry in enumerate(methods if isinstance(methods, list) else []):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        if name not in METHODS:
            problems.append(_unknown(f"methods[{i}].name", "method", name, METHODS.names()))
            continue
        allowed = sorted(METHODS.get(name).Params.model_fields)
        for where in ("params", "sweep"):
            values = entry.get(where)
            for key in values if isinstance(values, dict) else []:
                if key not in allowed:
                    problems.append(_unknown(f"methods[{i}].{where}.{key}", f"{name} parameter", key, allowed))
    return problems


def _fields_at(loc: tuple) -> list[str]:
    """Return the field names of the schema model that contains the field at ``loc``, or [] when unknown."""
    model = Suite
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = _model_of(field.annotation) if field is not None else None
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_of(argument)
        if found is not None:
            return found
    return None


def _format_error(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "suite"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        fields = _fields_at(error["loc"])
        close = difflib.get_close_matches(str(error["loc"][-1]), fields, n=1)
        if close:
            return f"{where}: unknown field (did you mean {close[0]!r}?); remove it or check its spelling"
        valid = f"; valid fields: {', '.join(fields)}" if fields else ""
        return f"{where}: unknown field; remove it or check its spelling{valid}"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    if error["type"] == "value_error":
        # Suite-level checks name their own locations; field validators do not.
        return f"{where}: {message}" if error["loc"] else message
    return f"{where}: {message} (got {_shorten(repr(error.get('input')), 80)})"


class Target(Strict):
    metric: Literal["flops", "params"]
    fraction: float


class RunConfig(Strict):
    """Everything that decides one run's result; its hash is the run's id."""

    suite: str
    model: str
    dataset: str
    dataset_options: dict[str, Any]
    method: str
    params: dict[str, Any]
    seed: int
    budget: Budget
    target: Target | None
    ranking: str
    measure: Measure

    def canonical(self) -> str:
        """Return the canonical JSON of the configuration (sorted keys, no spaces)."""
        payload = self.model_dump(mode="json", exclude={"suite"})
        return json.dumps(payload, sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        """Return a 16-hex-digit hash of the configuration (the suite's name excluded)."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    def dense_key(self) -> str:
        """Return the id of the cached dense network this run starts from."""
        payload = {
            "model": self.model,
            "dataset": self.dataset,
            "dataset_options": self.dataset_options,
            "seed": self.seed,
            "epochs": self.budget.dense_epochs,
            "batch_size": self.budget.batch_size,
            "optimizer": self.budget.optimizer.model_dump(mode="json"),
            "max_batches": self.budget.max_batches_per_epoch,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def sparse_key(self) -> str:
        """Return the id of the sparsity-phase network, shared by every target of one method setting."""
        payload = {
            "dense": self.dense_key(),
            "method": self.method,
            "params": self.params,
            "epochs": self.budget.sparsify_epochs,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Return a short readable description for logs and progress bars."""
        target = f"{self.target.metric}<={self.target.fraction:g}" if self.target else "natural"
        return f"{self.model}/{self.method}/{target}/seed{self.seed}"


def expand_runs(suite: Suite) -> list[RunConfig]:
    """Return every run of the suite, ordered so that runs sharing a trained network are adjacent."""
    runs = []
    for model, seed, entry in itertools.product(suite.models, suite.seeds, suite.methods):
        method_class = METHODS.get(entry.name)
        base = {**entry.params, **entry.overrides.get(model, {})}
        sweep_keys = sorted(entry.sweep)
        sweep_values = itertools.product(*(entry.sweep[k] for k in sweep_keys)) if sweep_keys else [()]
        for values in sweep_values:
            raw_params = {**base, **dict(zip(sweep_keys, values))}
            params = method_class.Params(**raw_params).model_dump(mode="json")
            targets: list[Target | None] = [None]
            if method_class.prunes != "nothing":
                targets += [Target(metric="flops", fraction=f) for f in suite.targets.flops]
                targets += [Target(metric="params", fraction=f) for f in suite.targets.params]
            for target in targets:
                runs.append(
                    RunConfig(
                        suite=suite.name,
                        model=model,
                        dataset=suite.dataset,
                        dataset_options=suite.dataset_options,
                        method=entry.name,
                        params=params,
                        seed=seed,
                        budget=suite.budget,
                        target=target,
                        ranking=suite.ranking,
                        measure=suite.measure,
                    )
                )
    return runs
