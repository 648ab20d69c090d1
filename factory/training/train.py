"""Train the two-channel shared-DenseNet201 (train extra): ``python -m factory.training.train``.

Stage 1 trains at a reduced input size (fast on a CPU), stage 2 at the model size. Starting points:
random weights, a state_dict (``--init-checkpoint``), an exported artifact such as the committed model
(``--init-onnx``), or a full training state (``--resume``: weights, EMA, optimiser, step, history;
continue later, also with more epochs). Each epoch writes ``last.pt`` (the full state) and, when the
validation part improves, ``best.pt`` (weights only: the raw or the EMA weights, whichever is better,
see ``best.json``). The best is exported to ONNX with fp16 weights plus a manifest. bf16 autocast and
channels_last on the CPU (2.3x faster than fp32 there) and on CUDA where the GPU has bf16 (fp16 with loss
scaling on older GPUs). ``--deadline-utc`` is a hard wall-clock budget: no step starts after it.
``--stage2-minutes`` fits stage 2 into a budget: after its second epoch the stage's epochs are re-planned to
what fits, so that the cosine schedule still ends at zero (a lent GPU is held for minutes, not hours).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, TensorDataset

from allbatch import CLASS_NAMES
from allbatch.model.config import DENSENET201, TINY, ModelConfig
from allbatch.model.network import TwoChannelNet
from allbatch.model.onnx_io import export_model_artifact, load_network
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.recipe import prepare_files
from allbatch.prepare.segment import SegmentationParams
from factory.training.augment import AugmentConfig
from factory.training.data import PairDataset, data_manifest_sha256, list_development_images
from factory.training.split import LabelledImage, block_split

log = logging.getLogger("allbatch.train")


@dataclass
class TrainConfig:
    data_root: str = "../shared/data/all-kaggle/Original"
    out: str = "allbatch/engines/allbatch-densenet201.onnx"
    arch: str = "densenet201"
    seed: int = 20221
    block_size: int = 25
    val_fraction: float = 0.18
    stage1_size: int = 112
    stage1_epochs: int = 12
    stage2_epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-3
    stage2_lr: float = 3e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    workers: int = 1
    time_budget_min: float = 0.0  # stage 1 stops early past this (0 = none); stage 2 still runs
    checkpoint_dir: str = "runs/train"
    init_checkpoint: str = ""  # start from these weights (a state_dict .pt) instead of random ones
    init_onnx: str = ""  # start from the weights of an exported artifact (e.g. the committed model)
    resume: str = ""  # continue a run from its full state (last.pt): weights, EMA, optimiser, step, history
    ema_decay: float = 0.0  # per-step EMA of weights and BN statistics (0 = none); both are validated
    warmup_fraction: float = 0.05  # stage 2 LR warm-up (stage 1: 0.15), then cosine to 0
    deadline_utc: str = ""  # ISO time (e.g. 2026-11-29T11:15:00+00:00): no training step starts after it
    stage2_minutes: float = 0.0  # stage 2's wall-clock budget (0 = none): its epochs re-planned after the second
    blank_bottom_fraction: float = 48 / 224  # part of the preprocessing: the scale-bar label band is never seen


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def evaluate(net: nn.Module, loader: DataLoader, device: torch.device, autocast_dtype: torch.dtype) -> dict[str, float]:
    """Accuracy, macro sensitivity and mean negative log-likelihood (temperature 1) over a loader."""
    net.eval()
    confusion = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), dtype=np.int64)
    nll, count = 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype):
        for inputs, labels in loader:
            logits = net(inputs.to(device)).float().cpu()
            nll += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            count += len(labels)
            np.add.at(confusion, (labels.numpy(), logits.argmax(1).numpy()), 1)
    recall = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    return {"accuracy": float(confusion.trace() / confusion.sum()), "macro_sensitivity": float(recall.mean()), "nll": nll / max(count, 1)}


def learning_rate(step: int, total_steps: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up from peak/25 to ``peak`` over ``warmup_fraction`` of the steps, then cosine to 0.

    A pure function of the step, so a resumed run (also one given more epochs) continues the schedule.
    """
    warmup = max(1, round(total_steps * warmup_fraction))
    if step < warmup:
        return peak * (0.04 + 0.96 * step / warmup)
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Schedule:
    """The optimiser's position: global step within the stage and the stage's planned length."""

    step: int
    total_steps: int
    peak_lr: float
    warmup_fraction: float


def run_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimiser: torch.optim.Optimizer,
    schedule: Schedule,
    loss_fn: nn.Module,
    device: torch.device,
    autocast_dtype: torch.dtype,
    ema: AveragedModel | None,
    deadline: float | None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, int]:
    """One pass over ``loader`` (advances ``schedule.step``); stops early at ``deadline`` (epoch seconds).

    ``scaler`` scales the loss for fp16 autocast (bf16 needs none).

    Returns (mean training loss, steps run).
    """
    net.train()
    total, count, steps = 0.0, 0, 0
    for inputs, labels in loader:
        if deadline is not None and time.time() > deadline:
            log.info("deadline reached after %d steps of this epoch", steps)
            break
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(schedule.step, schedule.total_steps, schedule.peak_lr, schedule.warmup_fraction)
        inputs = inputs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype):
            loss = loss_fn(net(inputs).float(), labels)
        optimiser.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimiser.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
        if ema is not None:
            ema.update_parameters(net)
        schedule.step += 1
        steps += 1
        total += float(loss.detach()) * len(labels)
        count += len(labels)
        if steps % 5 == 0:
            log.info("step %d of %d (this epoch: %d), loss %.4f", schedule.step, schedule.total_steps, steps, float(loss.detach()))
    return total / max(count, 1), steps


def _deadline_seconds(deadline_utc: str) -> float | None:
    """The ISO deadline as epoch seconds (a time without zone is taken as UTC); None when unset."""
    if not deadline_utc:
        return None
    moment = datetime.fromisoformat(deadline_utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def epochs_within(budget_s: float, elapsed_s: float, epoch_s: float, epochs_done: int, cap: int) -> int:
    """How many epochs a stage can plan in all when ``epochs_done`` took ``elapsed_s`` of ``budget_s`` and an
    epoch (training + validation) takes ``epoch_s``: those done at least, at most ``cap``."""
    more = math.floor(max(0.0, budget_s - elapsed_s) / max(epoch_s, 1e-9))
    return min(cap, epochs_done + more)


def _better(candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    """Validation order: accuracy, then macro sensitivity, then lower NLL."""
    if best is None:
        return True
    key = ("accuracy", "macro_sensitivity")
    a, b = tuple(candidate[k] for k in key), tuple(best[k] for k in key)
    return a > b or (a == b and candidate["nll"] < best["nll"])


def _history_beside(checkpoint: str) -> list[dict[str, float]]:
    """The per-epoch history of the run that produced ``checkpoint`` (its history.json), if any."""
    path = Path(checkpoint).parent / "history.json" if checkpoint else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else []


def init_history(config: TrainConfig) -> list[dict[str, Any]]:
    """Every earlier epoch behind the starting weights, oldest first: an artifact's own ``init_history`` and
    ``history`` (``--init-onnx``), or the history.json beside ``--init-checkpoint``."""
    if config.init_onnx:
        training = json.loads(Path(config.init_onnx).with_suffix(".json").read_text(encoding="utf-8")).get("training", {})
        return [*training.get("init_history", []), *training.get("history", [])]
    return _history_beside(config.init_checkpoint)


def initial_network(config: TrainConfig, model_config: ModelConfig) -> TwoChannelNet:
    """Random weights, or those of ``init_onnx`` (an exported artifact) or ``init_checkpoint`` (a state_dict)."""
    if config.init_onnx:
        manifest = json.loads(Path(config.init_onnx).with_suffix(".json").read_text(encoding="utf-8"))
        log.info("initialised from the artifact %s", config.init_onnx)
        return load_network(Path(config.init_onnx), manifest["architecture"])
    net = TwoChannelNet(model_config)
    if config.init_checkpoint:
        net.load_state_dict(torch.load(config.init_checkpoint, map_location="cpu"))
        log.info("initialised from %s", config.init_checkpoint)
    return net


def validation_loader(val_images: list[LabelledImage], prep: Preprocessing, seg: SegmentationParams) -> DataLoader:
    """The validation part prepared once (no augmentation) through the one recipe, kept in memory."""
    inputs = torch.from_numpy(prepare_files([image.path for image in val_images], prep, seg))
    labels = torch.tensor([image.label for image in val_images])
    return DataLoader(TensorDataset(inputs, labels), batch_size=64)


def train(config: TrainConfig) -> Path:
    torch.manual_seed(config.seed)
    torch.set_flush_denormal(True)  # denormal floats make CPU training steps many times slower
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # bf16 keeps fp32's exponent range, so it trains without loss scaling; fp16 only on GPUs without bf16.
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast_dtype = torch.bfloat16 if device.type == "cpu" or cuda_bf16 else torch.float16
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest convolution once
    model_config: ModelConfig = DENSENET201 if config.arch == "densenet201" else TINY
    prep = Preprocessing(blank_bottom_fraction=config.blank_bottom_fraction)
    seg = SegmentationParams()
    root = Path(config.data_root)
    images = list_development_images(root)
    train_images, val_images = block_split(images, config.block_size, config.val_fraction, config.seed)
    log.info("images: %d train, %d val (blocks of %d, seed %d)", len(train_images), len(val_images), config.block_size, config.seed)
    ckpt_dir = Path(config.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    state: dict[str, Any] | None = torch.load(config.resume, map_location="cpu", weights_only=False) if config.resume else None
    net = initial_network(config, model_config)
    if state is not None:
        net.load_state_dict(state["net"])
        log.info("resuming %s: stage %d after epoch %d (step %d)", config.resume, state["stage"], state["epoch"], state["step"])
    net = net.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # channels_last on a 5-D input is not defined; the backbone sees (2N, 3, H, W) after flatten.
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True) if config.ema_decay > 0 else None
    if ema is not None and state is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    # With no epochs to run, export the best checkpoint of an earlier (e.g. interrupted) run in ckpt_dir.
    export_only = config.stage1_epochs == 0 and config.stage2_epochs == 0
    history: list[dict[str, Any]] = json.loads((ckpt_dir / "history.json").read_text()) if export_only else []
    best: dict[str, Any] | None = None
    if state is not None:
        history, best = state["history"], state["best"]
    deadline = _deadline_seconds(config.deadline_utc)
    started = time.time()

    def train_loader(size: int) -> DataLoader:
        # random blanking in augmentation only matters when the preprocessing does not blank already
        augment_config = AugmentConfig(blank_bottom_p=0.0 if config.blank_bottom_fraction > 0 else 0.5)
        train_set = PairDataset(train_images, replace(prep, size=size), seg, augment_config, config.seed)
        return DataLoader(
            train_set,
            batch_size=config.batch_size,
            shuffle=True,
            num_workers=config.workers,
            drop_last=True,
            persistent_workers=config.workers > 0,  # forked once per stage, not once per epoch
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(config.seed),
        )

    best_path = ckpt_dir / "best.pt"
    for stage, size, epochs, lr, warmup in (
        (1, config.stage1_size, config.stage1_epochs, config.lr, 0.15),
        (2, prep.size, config.stage2_epochs, config.stage2_lr, config.warmup_fraction),
    ):
        if epochs <= 0 or (state is not None and state["stage"] > stage):
            continue
        loader = train_loader(size)
        val_loader = validation_loader(val_images, replace(prep, size=size), seg)
        optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=config.weight_decay)
        schedule = Schedule(step=0, total_steps=epochs * len(loader), peak_lr=lr, warmup_fraction=warmup)
        first_epoch = 0
        if state is not None and state["stage"] == stage:
            optimiser.load_state_dict(state["optimiser"])
            schedule.step, first_epoch = state["step"], state["epoch"]
        else:
            best = None  # each stage selects its own best
        budget_s = config.stage2_minutes * 60 if stage == 2 else 0.0
        stage_started = time.time()
        for epoch in range(first_epoch, epochs):
            # The budget binds from the third epoch on: the first two measure what an epoch costs.
            stage_deadline = deadline
            if budget_s > 0 and epoch > first_epoch + 1:
                stage_deadline = min(deadline or math.inf, stage_started + budget_s)
            if stage_deadline is not None and time.time() > stage_deadline:
                log.info("deadline reached: stage %d stops before epoch %d", stage, epoch + 1)
                break
            loader.dataset.epoch = epoch  # type: ignore[attr-defined]
            t0 = time.time()
            loss, steps = run_epoch(net, loader, optimiser, schedule, loss_fn, device, autocast_dtype, ema, stage_deadline, scaler)
            if steps == 0:
                break
            candidates: dict[str, nn.Module] = {"raw": net} if ema is None else {"raw": net, "ema": ema.module}
            scores = {name: evaluate(model, val_loader, device, autocast_dtype) for name, model in candidates.items()}
            row: dict[str, Any] = {"stage": stage, "size": size, "epoch": epoch + 1, "steps": steps, "loss": loss, **scores["raw"]}
            if "ema" in scores:
                row["ema"] = scores["ema"]
            row["seconds"] = time.time() - t0
            history.append(row)
            log.info("stage %d epoch %d/%d size %d loss %.4f val %s (%.0f s)", stage, epoch + 1, epochs, size, loss, scores, row["seconds"])
            for name, metrics in scores.items():
                if _better(metrics, best):
                    best = {**metrics, "weights": name, "stage": stage, "epoch": epoch + 1, "size": size}
                    torch.save(candidates[name].state_dict(), best_path)
                    (ckpt_dir / "best.json").write_text(json.dumps(best, indent=1))
            (ckpt_dir / "history.json").write_text(json.dumps(history, indent=1))
            torch.save(
                {
                    "stage": stage,
                    "epoch": epoch + 1,
                    "step": schedule.step,
                    "net": net.state_dict(),
                    "ema": None if ema is None else ema.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "history": history,
                    "best": best,
                    "config": asdict(config),
                },
                ckpt_dir / "last.pt",
            )
            over_budget = config.time_budget_min > 0 and (time.time() - started) / 60 > config.time_budget_min
            if stage == 1 and over_budget:
                log.info("time budget reached: stage 1 stops after epoch %d", epoch + 1)
                break
            if budget_s > 0 and epoch == first_epoch + 1:
                # The second epoch's time sets the plan (the first one's holds cuDNN's autotuning and the
                # workers' start: 31-55 s against 6-9 s for the next ones on an H200), and the cosine schedule
                # is re-planned to end with the last epoch that fits.
                epochs = epochs_within(budget_s, time.time() - stage_started, row["seconds"], epoch + 1, epochs)
                schedule.total_steps = epochs * len(loader)
                log.info("stage %d re-planned to %d epochs (%.1f s per epoch, %.0f s budget)", stage, epochs, row["seconds"], budget_s)
            if epoch + 1 >= epochs:
                break
        state = None  # a resumed stage is done; later stages start fresh
        if stage == 1 and config.stage2_epochs > 0:
            net.load_state_dict(torch.load(best_path))  # stage 2 starts from the best stage-1 weights
            if ema is not None:
                ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)

    net.load_state_dict(torch.load(best_path))
    net = net.to("cpu").float().eval()
    net = net.to(memory_format=torch.contiguous_format)
    if best is None and (ckpt_dir / "best.json").is_file():
        best = json.loads((ckpt_dir / "best.json").read_text())
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_model_artifact(
        net,
        out,
        prep,
        seg,
        training={
            "config": asdict(config),
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(0),
            "torch_version": torch.__version__,
            "code_version": git_commit(),
            "data_manifest_sha256": data_manifest_sha256(images, root),
            "n_train": len(train_images),
            "n_val": len(val_images),
            "split_rule": (
                f"blocks of {config.block_size} consecutive image numbers per class, val fraction {config.val_fraction}, seed {config.seed}"
            ),
            "val_files": [str(image.path.relative_to(root)) for image in val_images],
            "history": history,
            "init_history": init_history(config),
            "minutes": sum(row["seconds"] for row in history) / 60,
        },
        validation={
            "selected_epoch": best,
            "note": "torch bf16 autocast on the validation part; see factory/scripts/validate_model.py for ONNX figures",
        },
    )
    log.info("exported %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name, default in asdict(TrainConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train(TrainConfig(**vars(args)))


if __name__ == "__main__":
    main()
