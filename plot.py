"""The pictures, with no hard dependency: training curves and sample.py's sweep chart as PNG (matplotlib
if installed, else a tiny zlib PNG writer), solve GIFs, and the terminal's side-by-side panels.
Each prepare script's render_image draws its task's grid in the palette below.

    python plot.py out-sudoku-cpu        # (re)draws out-sudoku-cpu/curves.png from metrics.jsonl
"""
import json
import math
import os
import re
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
# The solve pictures' palette: paper, ink, thin lines, wrong, solved, and the model's own cells.
PAPER, INK, GREY, RED, GREEN, MODEL_INK = (
    (255, 255, 255), (20, 20, 20), (170, 170, 170), (205, 30, 30), (30, 140, 50), (30, 90, 200))


def write_png(path, rgb):
    """Write an (H, W, 3) uint8 array as a PNG (filter 0 on every row, zlib-compressed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    write_atomic(path, png)


def write_atomic(path, data):
    """Write bytes through path.tmp and a rename: readers see the old file or the new one, and a
    failure (a full disk, an unwritable place) leaves no temporary file behind. Raises OSError."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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


def read_jsonl(path):
    """The records of a JSON-lines log; lines that do not parse as a record (the last one, cut short
    when a run was killed mid-write) are skipped."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "iter" in record and "split" in record:
                records.append(record)
    return records


def plot_curves(metrics_path, png_path):
    """Loss and exact accuracy against the optimiser step, from train.py's metrics.jsonl."""
    records = read_jsonl(metrics_path)
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
    try:
        fig.savefig(png_path + ".tmp.png", dpi=100)
        os.replace(png_path + ".tmp.png", png_path)
    except BaseException:
        if os.path.exists(png_path + ".tmp.png"):
            os.remove(png_path + ".tmp.png")
        raise
    finally:
        plt.close(fig)



# ----------------------------------------------------------------------------------------------
# sample.py's pictures: the test-time sweep chart and animated GIFs (LZW on the standard library)


def plot_sweep(png_path, steps, panels, mark=None):
    """Charts against supervision steps on a log2 axis, one panel per (title, values, ylim or None);
    `mark` (the trained step count) is drawn as a grey vertical line."""
    xs = np.log2(np.asarray(steps, float))
    img = np.full((300, 420 * len(panels), 3), 255, np.uint8)
    for i, (title, ys, ylim) in enumerate(panels):
        x0, y0, w, h = 70 + 420 * i, 40, 320, 220
        lo, hi = ylim or (min(ys), max(ys))
        hi = hi if hi > lo else lo + 1

        def px(x):
            return x0 + 4 + (x - xs[0]) / max(xs[-1] - xs[0], 1e-9) * (w - 10)

        def py(y):
            return y0 + (1 - (min(max(y, lo), hi) - lo) / (hi - lo)) * (h - 2)

        if mark is not None and steps[0] <= mark <= steps[-1]:
            img[y0:y0 + h, int(round(px(math.log2(mark))))] = (170, 170, 170)
            draw_text(img, int(round(px(math.log2(mark)))) + 4, y0 + 2, "trained", (120, 120, 120), scale=1)
        img[y0:y0 + h, x0] = img[y0 + h - 1, x0:x0 + w] = (0, 0, 0)
        draw_text(img, x0, y0 - 16, title)
        for frac in (0, 0.5, 1):
            value = lo + frac * (hi - lo)  # no exponents: the glyphs have no '+'
            draw_text(img, x0 - 58, y0 + int((1 - frac) * (h - 1)) - 4,
                      f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}", scale=1)
        for s, x in zip(steps, xs):
            img[y0 + h:y0 + h + 4, int(round(px(x)))] = (0, 0, 0)
            draw_text(img, int(round(px(x))) - 2 * len(str(s)), y0 + h + 7, str(s), scale=1)
        points = [(px(x), py(y)) for x, y in zip(xs, ys)]
        draw_line(img, points, COLOURS[i % len(COLOURS)])
        for x, y in points:
            img[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = COLOURS[i % len(COLOURS)]
        draw_text(img, x0 + w // 2 - 68, y0 + h + 20, "supervision steps", scale=1)
    write_png(png_path, img)


def write_gif(path, frames, delays, loop=0):
    """Frames (H, W, 3) uint8 of one size, at most 256 colours in all, as an animated GIF89a that
    loops `loop` times (0 = forever); delays: how long each frame shows, in 1/100 s."""
    h, w, _ = frames[0].shape
    packed = [(f[..., 0].astype(np.int32) << 16) | (f[..., 1].astype(np.int32) << 8) | f[..., 2] for f in frames]
    colours = np.unique(np.concatenate([p.reshape(-1) for p in packed]))
    if len(colours) > 256:
        raise ValueError(f"{path}: the frames hold {len(colours)} colours; a GIF palette holds 256")
    bits = max(1, (len(colours) - 1).bit_length())  # the palette has 2**bits entries
    palette = np.zeros((1 << bits, 3), np.uint8)
    palette[:len(colours)] = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1)
    out = [b"GIF89a", struct.pack("<HHBBB", w, h, 0x80 | (bits - 1) << 4 | (bits - 1), 0, 0), palette.tobytes(),
           b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", loop) + b"\x00"]
    min_code_size = max(2, bits)
    for p, delay in zip(packed, delays):
        out.append(b"\x21\xf9\x04\x00" + struct.pack("<H", int(delay)) + b"\x00\x00")  # graphic control
        out.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0))                     # image descriptor
        data = lzw_encode(np.searchsorted(colours, p.reshape(-1)).tolist(), min_code_size)
        out.append(bytes([min_code_size]) + b"".join(
            bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255)) + b"\x00")
    out.append(b"\x3b")
    write_atomic(path, b"".join(out))


def write_solve_gif(path, parts):
    """parts: (grid picture, title, footer, footer colour) a frame: the question, then one per step;
    the first frame shows a little longer and the last stays. Raises OSError as write_gif."""
    height = max(grid.shape[0] for grid, *_ in parts)  # ARC answers change shape: pad all to one size
    texts = [text for _, title, footer, _ in parts for text in (title, footer)]
    width = max([grid.shape[1] for grid, *_ in parts] + [8 * len(text) for text in texts]) + 28  # 4 px a glyph
    frames = [framed(np.pad(grid, ((0, height - grid.shape[0]), (0, 0), (0, 0)), constant_values=255),
                     title, footer, colour, width) for grid, title, footer, colour in parts]
    write_gif(path, frames, [120] + [80] * (len(frames) - 2) + [300])


def framed(grid, title, footer, footer_colour, width):
    """A GIF frame: a title above the grid picture, a footer below, on a canvas `width` wide."""
    margin, top = 14, 34
    h, w, _ = grid.shape
    img = np.full((top + h + 40, max(width, w + 2 * margin), 3), PAPER, np.uint8)
    img[top - 1:top + h + 1, margin - 1:margin + w + 1] = GREY  # a thin border: open cells meet the paper
    img[top:top + h, margin:margin + w] = grid
    draw_text(img, margin, 10, title, INK, scale=2)
    draw_text(img, margin, top + h + 14, footer, footer_colour, scale=2)
    return img


ANSI_CODE = re.compile(r"\033\[[0-9;]*m")


def side_by_side(panels, width, gap=4):
    """Text panels (header lines, text maybe with colour codes) in rows that fit the terminal's width."""
    def visible(line):
        return len(ANSI_CODE.sub("", line))

    blocks, row, used = [], [], 0
    for head, text in panels:
        lines = head + text.splitlines()
        cols = max(visible(line) for line in lines)
        if row and used + gap + cols > width:
            blocks.append(row)
            row, used = [], 0
        used += cols + (gap if row else 0)
        row.append((lines, cols))
    blocks.append(row)
    out = []
    for row in blocks:
        height = max(len(lines) for lines, _ in row)
        out.append("\n".join((" " * gap).join(
            (lines[k] if k < len(lines) else "") + " " * (cols - visible(lines[k] if k < len(lines) else ""))
            for lines, cols in row).rstrip() for k in range(height)))
    return "\n\n".join(out)


def lzw_encode(pixels, min_code_size):
    """GIF's variable-width LZW: codes grow from min_code_size + 1 to 12 bits, packed LSB first;
    a clear code starts a fresh table when 4096 codes are taken."""
    clear, stop = 1 << min_code_size, (1 << min_code_size) + 1
    out, acc, n_bits = bytearray(), 0, 0
    table, next_code, width = {}, stop + 1, min_code_size + 1

    def emit(code):
        nonlocal acc, n_bits
        acc |= code << n_bits
        n_bits += width
        while n_bits >= 8:
            out.append(acc & 255)
            acc >>= 8
            n_bits -= 8

    emit(clear)
    prefix = pixels[0]
    for k in pixels[1:]:
        key = prefix << 8 | k
        if key in table:
            prefix = table[key]
            continue
        emit(prefix)
        if next_code < 4096:
            table[key] = next_code
            # The decoder adds this entry only on reading the next code, so it widens one code later.
            if next_code == 1 << width and width < 12:
                width += 1
            next_code += 1
        else:
            emit(clear)
            table, next_code, width = {}, stop + 1, min_code_size + 1
        prefix = k
    emit(prefix)
    emit(stop)
    if n_bits:
        out.append(acc & 255)
    return bytes(out)


if __name__ == "__main__":
    run_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
    plot_curves(os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "curves.png"))
    print(f"wrote {os.path.join(run_dir, 'curves.png')}")
