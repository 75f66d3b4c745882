"""Training run used by the resume-after-kill and DDP tests (run as a subprocess / under torchrun).

    python tests/helpers/train_script.py --data DIR --out DIR [--kill-after-steps N] [--resume]

Trains a small CNN (fastconv conv/pool layers, BatchNorm, dropout) on the synthetic CIFAR-10 in
DIR with augmentation, a frozen-backbone first epoch, label smoothing, gradient clipping and a
warm-up + cosine schedule, so that every piece of state a resume must restore is exercised.
``--kill-after-steps N`` ends the process with ``os._exit`` right after optimizer step N, like a
kill.  At the end each rank writes ``final_rank{R}.pt`` (state_dict + history) to --out.
"""

import argparse
import os
import sys

import torch
from torch import nn

import fastconv
from fastconv.data import CIFAR10, cifar10_eval_transform, cifar10_train_transform
from fastconv.train import TrainConfig, Trainer, init_distributed


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            fastconv.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), fastconv.MaxPool2d(2),
            fastconv.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Dropout(0.2))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.features(x))


class KillAfter:
    def __init__(self, steps):
        self.steps = steps

    def on_step_end(self, trainer):
        if trainer.global_step == self.steps:
            sys.stdout.flush()
            os._exit(17)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--kill-after-steps", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--different-init-per-rank", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    ctx = init_distributed()
    torch.manual_seed(1234 + (ctx.rank if args.different_init_per_rank else 0))
    model = SmallNet()
    train = CIFAR10(args.data, train=True, transform=cifar10_train_transform())
    val = CIFAR10(args.data, train=False, transform=cifar10_eval_transform())
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.05, nesterov=True, weight_decay=5e-4,
                      schedule="cosine", warmup_epochs=1, label_smoothing=0.1, grad_clip=2.0, head="fc",
                      freeze_backbone_epochs=1, backbone_lr_mult=0.5, seed=7, device="cpu",
                      output_dir=os.path.join(args.out, "run"), progress=False, plots=False)
    callbacks = [KillAfter(args.kill_after_steps)] if args.kill_after_steps else []
    trainer = Trainer(model, train, val, cfg, callbacks=callbacks)
    history = trainer.fit(resume=args.resume)
    for row in history:
        row.pop("time_s")
    torch.save({"model": model.state_dict(), "history": history, "optimizer": trainer.optimizer.state_dict()},
               os.path.join(args.out, f"final_rank{ctx.rank}.pt"))
    fastconv.train.distributed.cleanup()


if __name__ == "__main__":
    main()
