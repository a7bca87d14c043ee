"""Training curves as a PNG with no hard dependency: matplotlib if installed, else a tiny zlib PNG writer.

    python plot.py out-sudoku-cpu        # (re)draws out-sudoku-cpu/curves.png from metrics.jsonl
"""
import json
import os
import struct
import sys
import zlib

import numpy as np

# 3x5 bitmap glyphs for the fallback's labels: each a string of 5 rows of 3 bits.
GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "%": "101001010100101",
    "k": "100101110101101", " ": "000000000000000", "-": "000000111000000", ":": "000010000010000",
    "e": "000111111100111", "x": "000101010101000", "a": "000011101101011", "c": "000111100100111",
    "t": "010111010010011", "l": "110010010010111", "o": "000111101101111", "s": "000011110011110",
    "p": "000111101111100", "r": "000111100100100", "n": "000110101101101", "i": "010000010010010",
    "v": "000101101101010", "y": "000101111001111", "m": "000111111101101", "h": "100100111101101",
    "u": "000101101101111", "g": "000111101111001", "q": "000111101111001", "d": "001001111101111",
    "f": "011010111010010", "_": "000000000000111", "(": "010100100100010", ")": "010001001001010",
}
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def write_png(path, rgb):
    """Write an (H, W, 3) uint8 array as a PNG (filter 0 on every row, zlib-compressed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def draw_text(img, x, y, text, colour=(0, 0, 0), scale=2):
    for ch in text.lower():
        bits = GLYPHS.get(ch, GLYPHS[" "])
        for i, bit in enumerate(bits):
            if bit == "1":
                r, c = y + (i // 3) * scale, x + (i % 3) * scale
                img[r:r + scale, c:c + scale] = colour
        x += 4 * scale


def draw_line(img, points, colour):
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        xs, ys = np.linspace(x0, x1, n).round().astype(int), np.linspace(y0, y1, n).round().astype(int)
        for dx in (0, 1):
            img[ys, np.clip(xs + dx, 0, img.shape[1] - 1)] = colour


def panel(img, box, title, series, ylim=None):
    """One plot: axes in box = (x, y, w, h), series = [(label, xs, ys)]."""
    x0, y0, w, h = box
    img[y0:y0 + h, x0] = img[y0 + h - 1, x0:x0 + w] = (0, 0, 0)
    draw_text(img, x0, y0 - 16, title)
    xs_all = np.concatenate([np.asarray(s[1], float) for s in series if len(s[1])] or [np.zeros(1)])
    ys_all = np.concatenate([np.asarray(s[2], float) for s in series if len(s[2])] or [np.zeros(1)])
    lo, hi = ylim or (float(ys_all.min()), float(ys_all.max()))
    hi = hi if hi > lo else lo + 1
    x_hi = max(float(xs_all.max()), 1.0)
    for frac in (0, 0.5, 1):
        draw_text(img, x0 - 58, y0 + int((1 - frac) * (h - 1)) - 4, f"{lo + frac * (hi - lo):.3g}", scale=1)
    draw_text(img, x0 + w - 40, y0 + h + 4, f"{x_hi:.0f}", scale=1)
    for i, (label, xs, ys) in enumerate(series):
        if not len(xs):
            continue
        px = x0 + 1 + np.asarray(xs, float) / x_hi * (w - 3)
        py = y0 + (1 - (np.clip(np.asarray(ys, float), lo, hi) - lo) / (hi - lo)) * (h - 2)
        colour = COLOURS[i % len(COLOURS)]
        draw_line(img, list(zip(px, py)), colour)
        draw_text(img, x0 + 8, y0 + 6 + 12 * i, label, colour, scale=1)


def plot_curves(metrics_path, png_path):
    """Loss and exact accuracy against the optimiser step, from train.py's metrics.jsonl."""
    with open(metrics_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] != "train"]

    def series(rows, key):
        rows = [r for r in rows if key in r]
        return [r["iter"] for r in rows], [r[key] for r in rows]

    loss = [("train lm_loss", *series(train, "lm_loss")), ("eval lm_loss", *series(evals, "lm_loss"))]
    exact = [("train exact", *series(train, "exact_accuracy")), ("eval exact", *series(evals, "exact_accuracy")),
             ("eval token acc", *series(evals, "accuracy"))]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        img = np.full((300, 840, 3), 255, np.uint8)
        panel(img, (70, 40, 320, 220), "loss", loss)
        panel(img, (500, 40, 320, 220), "exact accuracy", exact, ylim=(0, 1))
        draw_text(img, 380, 284, "step", scale=1)
        write_png(png_path, img)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, title, lines in ((axes[0], "loss", loss), (axes[1], "exact accuracy", exact)):
        for label, xs, ys in lines:
            if xs:
                ax.plot(xs, ys, label=label, marker="o" if label.startswith("eval") else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    axes[1].set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(png_path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(png_path + ".tmp.png", png_path)


if __name__ == "__main__":
    run_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
    plot_curves(os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "curves.png"))
    print(f"wrote {os.path.join(run_dir, 'curves.png')}")
