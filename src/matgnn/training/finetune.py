"""``matgnn finetune``: transfer learning from a saved model in one phase (a freeze policy) or two
(embedding frozen, then everything at a lower learning rate), each phase an ordinary run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matgnn.config import TransferConfig
from matgnn.training.run import train


def finetune(cfg, source: str | Path, freeze_policy: str | list[str] = "none", keep_heads: bool = False,
             two_phase: bool = False, phase1_epochs: int | None = None, phase2_lr_factor: float = 0.1,
             **train_kw: Any) -> list[Path]:
    """Fine-tune ``source`` on ``cfg``'s data and targets; returns the run folder(s).

    One phase: ``freeze_policy`` for all of ``cfg.train.epochs``. Two phases: phase 1 (``phase1_epochs``,
    default half) with the embedding frozen at phase 1's learning rate (``train.lr``; by default the base value of a
    run that starts from a saved model), then phase 2 from phase 1's model with every layer trainable at that
    ``lr × phase2_lr_factor`` for the remaining epochs.
    """
    def with_(c, **upd):
        tr = c.train.model_copy(update={k: v for k, v in upd.items() if k in ("epochs", "lr")})
        rest = {k: v for k, v in upd.items() if k not in ("epochs", "lr")}
        return c.model_copy(update={"train": tr, **rest})

    base = cfg.name or f"finetune-{'+'.join(h.name for h in cfg.targets)}"
    if not two_phase:
        return [train(with_(cfg, transfer=TransferConfig(from_model=str(source), freeze=freeze_policy,
                                                         keep_heads=keep_heads), name=base), **train_kw)]
    p1 = phase1_epochs or max(1, cfg.train.epochs // 2)
    if p1 >= cfg.train.epochs:
        raise ValueError(f"phase 1 ({p1} epochs) leaves no epochs of the {cfg.train.epochs} for phase 2")
    phase1 = with_(cfg, epochs=p1, name=f"{base}-phase1",
                   transfer=TransferConfig(from_model=str(source), freeze=["embedding"], keep_heads=keep_heads))
    r1 = train(phase1, **train_kw)
    lr2 = phase1.learning_rate() * phase2_lr_factor
    r2 = train(with_(cfg, epochs=cfg.train.epochs - p1, lr=lr2, name=f"{base}-phase2",
                     transfer=TransferConfig(from_model=str(r1), freeze="none", keep_heads=True)), **train_kw)
    return [r1, r2]
