"""One configuration schema for the CLI and the Python API.

A run is described by :class:`RunConfig`; ``matgnn train CONFIG.yaml`` reads one,
command-line flags override its keys, and every run saves the resolved config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from matgnn.artifacts import read_yaml
from matgnn.data.sources import EmtConfig, SourceConfig
from matgnn.graphs.neighbors import GraphSettings
from matgnn.models import DEFAULT_MODEL, MODELS, ModelConfig, model_class, model_settings
from matgnn.models.base import MatgnnModel


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeadConfig(_Strict):
    """One prediction target (HydraGNN's "variable of interest")."""

    name: str = Field(description="target field of the source, e.g. optb88vdw_bandgap or magmom")
    level: Literal["graph", "node"] = "graph"
    units: str | None = Field(None, description=(
        "the target's unit (e.g. eV, eV/atom, meV/atom, GPa, μB): saved with the model's head and written on its "
        "parity plots' axes"))
    loss: Literal["l1", "mse", "huber"] = "l1"
    huber_delta: float = 1.0
    weight: float = Field(1.0, ge=0)
    normalize: bool = Field(True, description="standardise the target with train-set mean/std (stored in the model)")
    transform: Literal["none", "log", "log_per_area"] = Field("none", description=(
        "log: train on log1p(y) (positive, skewed targets such as moduli); log_per_area (graph heads of slabs and "
        "monolayers): train on log(y / A), A the in-plane area per atom (Å², the cell's two periodic axes), for "
        "positive energies per atom that scale with the layer's area, such as exfoliation energies; predictions "
        "are mapped back"))
    baseline: Literal["none", "element_mean", "backbone"] = Field("none", description=(
        "node heads: element_mean makes the model learn the residual to each element's mean label over the "
        "training atoms (the table is stored in the model and added back to predictions); backbone (magnetic "
        "moments on model chgnet) the residual to the backbone's own zero-shot prediction of each atom, so an "
        "element or structure type unlike the training set starts from the pretrained model's answer"))
    components: list[str] | None = Field(None, description=(
        "a vector-valued graph head: these graph-level targets of the source are predicted together as one "
        "output of len(components) values (e.g. several band gaps, or a spectrum's bins); each component is "
        "standardised on its own and gets its own metrics and prediction columns; `name` names the head"))

    @property
    def dim(self) -> int:
        """Values the head predicts per graph (or atom): 1, or the number of its components."""
        return len(self.components) if self.components else 1

    def spec(self) -> dict[str, Any]:
        """The head as a model stores it (``head_specs``)."""
        out = {"name": self.name, "level": self.level, "transform": self.transform, "baseline": self.baseline}
        if self.components:
            out["components"] = list(self.components)
        if self.units:
            out["units"] = self.units
        return out

    @model_validator(mode="after")
    def _check_baseline(self) -> HeadConfig:
        if self.components is not None:
            if self.level != "graph":
                raise ValueError(f"head {self.name!r}: components (a vector head) are for graph-level heads")
            if len(self.components) < 2 or len(set(self.components)) != len(self.components):
                raise ValueError(f"head {self.name!r}: components must name at least two distinct targets")
        if self.baseline != "none" and self.level != "node":
            raise ValueError(f"head {self.name!r}: baseline {self.baseline!r} is for node-level heads")
        if self.baseline != "none" and self.transform != "none":
            raise ValueError(f"head {self.name!r}: baseline and transform {self.transform!r} cannot be combined")
        if self.transform == "log_per_area" and (self.level != "graph" or self.components):
            raise ValueError(f"head {self.name!r}: transform 'log_per_area' is for scalar graph-level heads")
        return self


def batch_targets(heads: list[HeadConfig]) -> tuple[list, list[str]]:
    """The graph-level and node-level target fields a batch carries for ``heads`` (in the form
    :class:`~matgnn.graphs.packed.PackedGraphs` takes: a vector head as ``(name, components)``)."""
    graph = [(h.name, list(h.components)) if h.components else h.name for h in heads if h.level == "graph"]
    return graph, [h.name for h in heads if h.level == "node"]


class TrainConfig(_Strict):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=1, description="graphs per batch (per process under torchrun)")
    lr: float | None = Field(None, gt=0, description=(
        "AdamW learning rate; default (null): the model family's own, chosen by the task suite ("
        + ", ".join(f"{n} {c.default_lr:g}" for n, c in MODELS.items() if c.default_lr != MatgnnModel.default_lr)
        + f", every other family {MatgnnModel.default_lr:g}; {MatgnnModel.default_lr:g} for a run that starts "
        "from a saved model), written into the run folder's config.yaml"))
    weight_decay: float = Field(1e-5, ge=0)
    patience: int = Field(20, ge=1, description="early stopping: epochs without validation improvement")
    scheduler: Literal["plateau", "cosine", "onecycle", "none"] = "plateau"
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    clip_grad: float | None = Field(5.0, gt=0)
    seed: int = 42
    threads: int | None = Field(None, ge=1, description=(
        "torch CPU threads; default: torch's own choice (all cores), and the matgnn command makes them "
        "yield (OMP_WAIT_POLICY=PASSIVE) when other processes run as it starts, so a busy machine does not "
        "collapse the speed; through the Python API (torch already imported, its threads spinning) a run "
        "that starts beside other work trains on the cores left over and says so; set 1-2 when several runs "
        "or torchrun processes share a machine"))
    task_weighting: Literal["fixed", "uncertainty"] = Field("fixed", description=(
        "fixed: the heads' weights; uncertainty: each head's loss scaled by a learned exp(-s_k) plus s_k "
        "(Kendall, Gal & Cipolla 2018) on top of its weight; the learned weights are logged per epoch"))
    checkpoint_every: float = Field(30.0, ge=0, description=(
        "seconds between writes of checkpoint_last.pt, history.csv, TensorBoard and the best model "
        "(always written after the last epoch); 0: after every epoch"))
    tensorboard: bool = Field(True, description="write TensorBoard logs to <run>/tensorboard")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU")
    amp: bool = Field(False, description=(
        "mixed precision (bfloat16 autocast, fp32 weights) in training and validation passes on a GPU with "
        "bf16; on CPU ignored with a warning (oneDNN keeps memory for every new batch shape)"))
    in_memory: bool | Literal["auto"] = Field("auto", description=(
        "hold the splits' graphs in RAM (read once); false: stream them from the LMDB cache one batch at a "
        "time (memory bounded by the batch; loader_workers processes assemble batches); auto: in RAM when "
        "the training split has < 20 M edges"))
    batch_by: Literal["graphs", "atoms", "edges"] = Field("graphs", description=(
        "graphs: batch_size graphs per batch; atoms / edges: size-aware batches of about batch_budget "
        "atoms / edges each, so batches of large and small crystals cost about the same"))
    batch_budget: int | None = Field(None, ge=1, description=(
        "atoms or edges per batch with batch_by atoms/edges (a batch closes when it reaches the budget); "
        "default batch_size × the mean graph size of the split"))
    scheduler_patience: int | None = Field(None, ge=1, description="plateau: epochs before halving the LR (default patience/3)")
    max_minutes: float | None = Field(None, gt=0, description=(
        "time budget for the training epochs: training stops before an epoch that would overrun it (the best "
        "weights are kept and scored as usual), and the cosine and one-cycle schedules are planned over the "
        "epochs that fit (re-planned each epoch from the mean epoch time), so the LR still anneals; "
        "the budget's result depends on the machine's speed, the run folder records the epochs run"))


class SplitConfig(_Strict):
    """How structures are split. ``random``: seeded fractions. ``kfold``: fold ``fold``
    of ``folds`` is the test set, ``val`` drawn from the rest. ``grouped``: whole groups
    per split (``group_by: formula``: reduced formula; ``structure``: structural twins, the same
    crystal or monolayer under two ids, see :mod:`matgnn.data.twins`). ``grouped_kfold``: ``kfold``
    over whole groups (folds balanced in size; validation also whole groups). ``stratified``: random
    within quantile bins of ``stratify_by`` (a target). ``ids``: a JSON/zip file of ids per split
    (e.g. the JARVIS leaderboard's ``dft_3d_<target>.json.zip``)."""

    kind: Literal["random", "kfold", "grouped", "grouped_kfold", "stratified", "ids"] = "random"
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    seed: int = 42
    folds: int = Field(5, ge=2)
    fold: int = Field(0, ge=0)
    group_by: Literal["formula", "structure"] = Field("formula", description=(
        "grouped and grouped_kfold: what a group is. formula: one reduced formula (no composition in two "
        "splits); structure: structural twins (same reduced formula and pymatgen StructureMatcher fit), so a "
        "duplicate entry never sits in training while its twin is tested"))
    stratify_by: str | None = None
    bins: int = Field(10, ge=2)
    ids_file: str | None = None
    bootstrap: int | None = Field(None, description=(
        "resample the training split with replacement, seeded by this value (bootstrap ensemble members); "
        "validation and test are unchanged"))


class EvaluationConfig(_Strict):
    """Extra breakdowns of the test metrics."""

    exclude_elements: list[str] = Field(default_factory=list, description=(
        "metrics also reported without these elements (atoms of them for node heads, structures "
        "containing them for graph heads), e.g. [V, Cr, Mn] for magnetic moments"))
    error_bins: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0], description=(
        "node heads: edges of the |label| bins of errors_by_bin_<head>.csv"))


class TransferConfig(_Strict):
    """Start from another model (transfer learning); see :mod:`matgnn.training.transfer`."""

    from_model: str | None = Field(None, description=(
        "a run folder, model folder or shipped model's name; its architecture and graph settings are used "
        "(model: and graphs: of this config are then ignored) and its trunk weights initialise the run"))
    freeze: str | list[str] = Field("none", description=(
        "none | all_but_embedding_conv0 | all_but_embedding | trunk, or a list of layer groups to freeze "
        "(embedding, conv_0, conv_1, ..., readout, head)"))
    keep_heads: bool = Field(False, description="reuse the source's head for a target it also predicted "
                                                "(default: new heads)")


class DeltaConfig(_Strict):
    """Delta learning: train on the residuals of a frozen base model; see :mod:`matgnn.models.delta`."""

    base_model: str | None = Field(None, description=(
        "a run folder, model folder or shipped model's name whose predictions are subtracted from the labels; "
        "its graph settings are used; the saved model predicts base + delta"))
    base_heads: dict[str, str] = Field(default_factory=dict, description=(
        "target -> the base model's head for it, where the base names it otherwise (e.g. "
        "{optb88vdw_bandgap: target} for a base trained on 2DMatPedia's PBE gaps as `target`); "
        "default: the head of the same name"))


class RunConfig(_Strict):
    """Everything a training run depends on."""

    source: SourceConfig = Field(default_factory=EmtConfig)
    graphs: GraphSettings = Field(default_factory=GraphSettings)
    targets: list[HeadConfig] = Field(
        default_factory=lambda: [HeadConfig(name="mixing_energy", level="graph")])
    model: ModelConfig = Field(default_factory=lambda: MODELS[DEFAULT_MODEL].config_class(), description=(
        "the model and its own settings, chosen by name (see matgnn.models: each model's config class); default: "
        "the family the task suite chose (matgnn.models.DEFAULT_MODEL)"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    delta: DeltaConfig = Field(default_factory=DeltaConfig)
    on_invalid: Literal["skip", "error"] = "skip"
    cache_dir: str | None = None
    workers: int | None = None
    output_dir: str = "runs"
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_model_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            data = {**data, "model": model_settings(data["model"])}
        return data

    @model_validator(mode="after")
    def _check_delta(self) -> RunConfig:
        if self.delta.base_model:
            bad = [h.name for h in self.targets if h.transform != "none" or h.baseline != "none"]
            if bad:
                raise ValueError(f"delta learning: heads {bad} use a transform or baseline; residuals need neither")
        return self

    def learning_rate(self) -> float:
        """The learning rate this run trains at: ``train.lr`` when set; else the model family's
        (:attr:`~matgnn.models.base.MatgnnModel.default_lr`), or the base value for a run that starts from a saved
        model (``transfer.from_model``: its family is the saved model's, whatever ``model:`` says)."""
        if self.train.lr is not None:
            return self.train.lr
        if self.transfer.from_model:
            return MatgnnModel.default_lr
        return model_class(self.model.name).default_lr

    def with_learning_rate(self) -> RunConfig:
        """This config with :meth:`learning_rate` written into ``train.lr`` (what a run folder saves)."""
        if self.train.lr is not None:
            return self
        return self.model_copy(update={"train": self.train.model_copy(update={"lr": self.learning_rate()})})

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return cls.model_validate(read_yaml(path) or {})

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    def with_overrides(self, overrides: list[str]) -> RunConfig:
        """Apply ``dotted.key=value`` overrides (values parsed as YAML)."""
        data = self.model_dump(mode="json")
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} is not key=value")
            node = data
            parts = key.strip().split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ValueError(f"override {item!r}: {p!r} is not a section")
                node = node[p]
            node[parts[-1]] = yaml.safe_load(raw)
        return RunConfig.model_validate(data)

