#!/usr/bin/python3
"""Turns tessera-train's metrics.jsonl into a loss-curve PNG (train and validation loss)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_metrics.py METRICS.jsonl OUT.png")
    steps, loss, vsteps, vloss = [], [], [], []
    with open(sys.argv[1]) as f:
        for line in f:
            r = json.loads(line)
            steps.append(r["step"])
            loss.append(r["loss"])
            if "val_loss" in r:
                vsteps.append(r["step"])
                vloss.append(r["val_loss"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, label="train", linewidth=1)
    if vsteps:
        ax.plot(vsteps, vloss, "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Tessera training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
