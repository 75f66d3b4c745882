"""Table, summary, JSON and bar chart for benchmarks/compare.py."""
import json
import os
from collections import defaultdict

from _timing import geomean

FMT = {"nchw": "nchw", "channels_last": "cl"}

CONV_HEADER = (f"{'layer':<46} {'N':>4} {'fmt':<4} {'dtype':<5} {'pass':<10} {'torch ms':>9} {'fc ms':>9} "
               f"{'ratio':>6} {'torch':>8} {'fc':>8} {'%peak':>6}")
POOL_HEADER = (f"{'max_pool2d':<46} {'N':>4} {'fmt':<4} {'dtype':<5} {'pass':<10} {'torch ms':>9} {'fc ms':>9} "
               f"{'ratio':>6} {'torchGB/s':>9} {'fcGB/s':>8}")
TRAIN_HEADER = (f"{'training step':<30} {'N':>4} {'fmt':<4} {'prec':<8} {'torch ms':>9} {'fc ms':>9} {'ratio':>6} "
                f"{'torch img/s':>11} {'fc img/s':>9} {'torch MiB':>9} {'fc MiB':>8}")


def conv_row(r):
    pct = r.get("pct_peak")
    return (f"{r['layer'][:46]:<46} {r['batch']:>4} {FMT[r['format']]:<4} {r['dtype']:<5} {r['pass']:<10} "
            f"{r['torch_ms']:>9.3f} {r['fastconv_ms']:>9.3f} {r['ratio']:>6.2f} {r['torch_rate']:>8.1f} "
            f"{r['fastconv_rate']:>8.1f} {(f'{pct:6.1f}' if pct is not None else '     -'):>6}")


def pool_row(r):
    return (f"{r['layer'][:46]:<46} {r['batch']:>4} {FMT[r['format']]:<4} {r['dtype']:<5} {r['pass']:<10} "
            f"{r['torch_ms']:>9.3f} {r['fastconv_ms']:>9.3f} {r['ratio']:>6.2f} {r['torch_gbs']:>9.1f} "
            f"{r['fastconv_gbs']:>8.1f}")


def train_row(r):
    mem = r.get("memory", {})

    def mib(side):
        v = mem.get(side, {}).get("peak_mib")
        return f"{v:>8.0f}" if isinstance(v, (int, float)) else f"{'-':>8}"
    return (f"{r['model']:<30} {r['batch']:>4} {FMT[r['format']]:<4} {r['precision']:<8} {r['torch_ms']:>9.1f} "
            f"{r['fastconv_ms']:>9.1f} {r['ratio']:>6.2f} {r['torch_images_per_s']:>11.1f} "
            f"{r['fastconv_images_per_s']:>9.1f} {mib('torch'):>9} {mib('fastconv')}"
            + ("  <- fastconv gradients WRONG" if r.get("wrong") else ""))


def tables(results, sections):
    """The conv, max-pool and training-step tables, each under its one-line explanation."""
    lines = []
    for key, header, row in (("conv", CONV_HEADER, conv_row), ("pool", POOL_HEADER, pool_row),
                             ("train", TRAIN_HEADER, train_row)):
        if results[key] or key in sections:
            lines += ["", sections.get(key, key), header] + [row(r) for r in results[key]]
    return lines


def model_totals(conv_records):
    """Per (model, batch, format, dtype, pass): time of all of the model's convs (each layer times its count)."""
    acc = defaultdict(lambda: [0.0, 0.0, 0, 0.0])
    for r in conv_records:
        k = (r["model"], r["batch"], r["format"], r["dtype"], r["pass"])
        acc[k][0] += r["count"] * r["torch_ms"]
        acc[k][1] += r["count"] * r["fastconv_ms"]
        acc[k][2] += r["count"]
        acc[k][3] += r["count"] * r["flops"]
    return [{"model": k[0], "batch": k[1], "format": k[2], "dtype": k[3], "pass": k[4], "convs": v[2],
             "torch_ms": v[0], "fastconv_ms": v[1], "ratio": v[0] / v[1], "flops": v[3]} for k, v in acc.items()]


def summarize(results):
    """Summary numbers (stored in the JSON) and the lines printed under the table."""
    conv, pools, train = results["conv"], results["pool"], results["train"]
    lines, summ = [], {"geomean_resnet18_3x3": {}, "first_layer": {}, "model_totals": {}, "max_pool": {},
                       "train_step": {}}
    keys = list(dict.fromkeys((r["format"], r["dtype"]) for r in conv))
    for fmt, dt in keys:
        for ps in ("fwd", "bwd_input", "bwd_weight", "fwd+bwd"):
            sel = [r["ratio"] for r in conv if r["format"] == fmt and r["dtype"] == dt and r["pass"] == ps
                   and r["model"] == "resnet18" and r["R"] == 3 and r["name"] != "conv1"]
            if sel:
                g = geomean(sel)
                summ["geomean_resnet18_3x3"][f"{fmt}/{dt}/{ps}"] = g
                lines.append(f"geomean ratio, ResNet-18 3x3 layers (excl. stem), {fmt:<13} {dt:<5} {ps:<10}: "
                             f"{g:5.2f}  ({len(sel)} layer-batches)")
    for r in conv:
        if r["model"] == "resnet18" and r["name"] == "conv1" and r["pass"] in ("fwd", "fwd+bwd"):
            k = f"N{r['batch']}/{r['format']}/{r['dtype']}/{r['pass']}"
            summ["first_layer"][k] = r["ratio"]
            lines.append(f"first layer (3->64 3x3) ratio {k}: {r['ratio']:.2f}")
    for t in model_totals(conv):
        if t["pass"] in ("fwd", "fwd+bwd"):
            k = f"{t['model']}/N{t['batch']}/{t['format']}/{t['dtype']}/{t['pass']}"
            summ["model_totals"][k] = t
            lines.append(f"all {t['convs']} convs of {k} (count-weighted): torch {t['torch_ms']:.1f} ms, "
                         f"fastconv {t['fastconv_ms']:.1f} ms, ratio {t['ratio']:.2f}")
    for r in pools:
        k = f"{r['layer']} N{r['batch']}/{r['format']}/{r['dtype']}/{r['pass']}"
        summ["max_pool"][k] = r["ratio"]
        lines.append(f"max_pool2d ratio {k}: {r['ratio']:.2f}")
    for r in train:
        k = f"{r['model']} N{r['batch']}/{r['format']}/{r['precision']}"
        summ["train_step"][k] = r["ratio"]
        lines.append(f"training-step ratio {k}: {r['ratio']:.2f} ({r['fastconv_images_per_s']:.1f} vs "
                     f"{r['torch_images_per_s']:.1f} images/s)")
    summ["best_vs_best"] = {}
    for model, batch, prec in dict.fromkeys((r["model"], r["batch"], r["precision"]) for r in train):
        runs = [r for r in train if (r["model"], r["batch"], r["precision"]) == (model, batch, prec)]
        if len(runs) < 2:
            continue
        t, f = min(runs, key=lambda r: r["torch_ms"]), min(runs, key=lambda r: r["fastconv_ms"])
        ratio = t["torch_ms"] / f["fastconv_ms"]
        summ["best_vs_best"][f"{model} N{batch}/{prec}"] = {"ratio": ratio, "torch_format": t["format"],
                                                             "fastconv_format": f["format"]}
        lines.append(f"training step BEST vs BEST {model} N{batch} {prec}: fastconv {FMT[f['format']]} "
                     f"{f['fastconv_images_per_s']:.1f} vs torch {FMT[t['format']]} {t['torch_images_per_s']:.1f} "
                     f"images/s, ratio {ratio:.2f}")
    worst = sorted(conv, key=lambda r: r["ratio"])[:6]
    if worst:
        lines.append("slowest relative to torch: " + "; ".join(
            f"{r['layer']} N{r['batch']} {FMT[r['format']]} {r['dtype']} {r['pass']} {r['ratio']:.2f}" for r in worst))
    summ["slowest"] = [{k: r[k] for k in ("layer", "batch", "format", "dtype", "pass", "ratio")} for r in worst]
    return summ, lines


def save_json(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)


def plot(path, results, title):
    """Bar chart of ratio (torch time / fastconv time) per layer and pass, one panel per format/dtype, log scale."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot"
    conv = results["conv"]
    panels = list(dict.fromkeys((r["format"], r["dtype"]) for r in conv))
    extra = results["pool"] + results["train"]
    n = len(panels) + (1 if extra else 0)
    groups_max = max([len({(r["layer"], r["batch"]) for r in conv if (r["format"], r["dtype"]) == p})
                      for p in panels] + [len(extra)] + [1])
    fig, axes = plt.subplots(n, 1, figsize=(max(10, 0.75 * groups_max + 3), 4.2 * n), squeeze=False)
    colors = {"fwd": "#4C72B0", "bwd_input": "#DD8452", "bwd_weight": "#55A868", "fwd+bwd": "#C44E52"}
    for ax, (fmt, dt) in zip(axes[:, 0], panels):
        rows = [r for r in conv if (r["format"], r["dtype"]) == (fmt, dt)]
        groups = list(dict.fromkeys((r["layer"], r["batch"]) for r in rows))
        width = 0.8 / len(colors)
        for i, (ps, color) in enumerate(colors.items()):
            xs, ys = [], []
            for g, key in enumerate(groups):
                for r in rows:
                    if (r["layer"], r["batch"]) == key and r["pass"] == ps:
                        xs.append(g + (i - 1.5) * width)
                        ys.append(r["ratio"])
            ax.bar(xs, ys, width, color=color, label=ps)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{_short(lab)} N{b}" for lab, b in groups], rotation=60, ha="right", fontsize=7)
        _finish(ax, f"conv2d, {fmt}, {dt}")
    if extra:
        ax = axes[-1, 0]
        labels = [f"pool {r['layer'].replace('maxpool ', '')} N{r['batch']} {FMT[r['format']]} {r['dtype']} {r['pass']}"
                  for r in results["pool"]]
        labels += [f"train {r['model']} N{r['batch']} {FMT[r['format']]} {r['precision']}" for r in results["train"]]
        vals = [r["ratio"] for r in extra]
        bar_colors = ["#8172B3"] * len(results["pool"]) + ["#937860"] * len(results["train"])
        ax.bar(range(len(vals)), vals, 0.6, color=bar_colors)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        _finish(ax, "max_pool2d and end-to-end training step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (4.2 * n)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


def _short(label):
    """'resnet18:layer1.0.conv1 64->64 3x3 @32 (x4)' -> 'r18 64->64 3x3 @32'."""
    model, rest = label.split(":", 1)
    model = {"resnet18": "r18", "resnet50": "r50", "lenet5": "lenet"}.get(model, model)
    parts = rest.split(" (x")[0].split(" ")
    return f"{model} {' '.join(parts[1:])}"


def _finish(ax, title):
    from matplotlib.ticker import FuncFormatter
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25" else ""))
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_ylabel("torch time / fastconv time\n(>1: fastconv faster)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, ncol=4)
