"""Draw docs/img/architecture.png from the Mermaid block of docs/architecture.md.

    python docs/img/render_architecture.py           # write the PNG
    python docs/img/render_architecture.py --check   # exit 1 if the PNG is out of date

Mermaid renders on GitHub but not in every viewer, so the same graph is also kept as a
PNG. Nodes, labels and edges are read from the first ``mermaid`` block of the page; only
where each box goes is decided here (``POSITIONS``), so the picture cannot drift from the
diagram: ``--check`` fails when a node has no position or the PNG differs from a fresh
drawing. Matplotlib only, no network; the output is byte-stable for one matplotlib version.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "architecture.md"
PNG = HERE / "architecture.png"

#: Box centres (x, y) in drawing units; y grows upwards.
POSITIONS: dict[str, tuple[float, float]] = {
    "dvc": (3.8, 7.6),
    "gen": (1.2, 6.4),
    "raw": (3.8, 6.4),
    "validate": (6.4, 6.4),
    "feat": (9.0, 6.4),
    "train": (11.6, 6.4),
    "retrain": (1.2, 5.0),
    "promo": (4.6, 5.0),
    "mlflow": (11.6, 5.0),
    "monitor": (1.2, 3.6),
    "router": (6.4, 3.6),
    "api": (9.0, 3.6),
    "client": (11.6, 3.6),
    "reports": (1.2, 2.1),
    "log": (3.9, 2.1),
    "shadowq": (6.4, 2.1),
    "online": (9.0, 2.1),
    "feedback": (11.6, 2.1),
}
#: Edges drawn as arcs (by source and target) so they do not run through other boxes.
ARCS: dict[tuple[str, str], float] = {
    ("feedback", "log"): -0.2,
    ("log", "retrain"): -0.2,
    ("mlflow", "monitor"): 0.08,
}
#: Where along an edge its label sits (0: source, 1: target), when not in the middle.
LABEL_AT: dict[tuple[str, str], float] = {("api", "log"): 0.22}
BOX_W, BOX_H = 2.2, 0.78

_NODE = re.compile(r'^\s*(\w+)(\[\(|\[)"(.+?)"(\)\]|\])')
_EDGE = re.compile(r'^\s*(\w+)(?:\[.*?\]\]?)?\s*(<-->|-->|-\.->)\s*(?:\|"(.*?)"\|)?\s*(\w+)')


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    dotted: bool
    both_ways: bool


def parse(page: Path = PAGE) -> tuple[dict[str, tuple[str, bool]], list[Edge]]:
    """Nodes (id → label, is a store) and edges of the page's first Mermaid block."""
    text = page.read_text()
    match = re.search(r"```mermaid\n(.*?)```", text, re.S)
    if match is None:
        raise SystemExit(f"no mermaid block in {page}")
    nodes: dict[str, tuple[str, bool]] = {}
    edges: list[Edge] = []
    for line in match.group(1).splitlines()[1:]:
        for definition in re.finditer(r'(\w+)(\[\(|\[)"(.+?)"(\)\]|\])', line):
            name, opening, label, _ = definition.groups()
            nodes[name] = (label.replace("<br/>", "\n"), opening == "[(")
        edge = _EDGE.match(line)
        if edge:
            source, arrow, label, target = edge.groups()
            edges.append(
                Edge(
                    source,
                    target,
                    (label or "").replace("<br/>", "\n"),
                    arrow == "-.->",
                    arrow == "<-->",
                )
            )
        elif line.strip() and not _NODE.match(line):
            raise SystemExit(f"cannot read this mermaid line: {line!r}")
    return nodes, edges


def draw(nodes: dict[str, tuple[str, bool]], edges: list[Edge]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(13, 8.2), dpi=100)
    ax.set_xlim(-0.2, 12.9)
    ax.set_ylim(0.6, 8.1)
    ax.axis("off")
    patches = {}
    for name, (label, store) in nodes.items():
        x, y = POSITIONS[name]
        colour = "#dbe9f6" if store else "#fdf1d8"
        box = FancyBboxPatch(
            (x - BOX_W / 2, y - BOX_H / 2),
            BOX_W,
            BOX_H,
            boxstyle="round,pad=0.02,rounding_size=0.15" if not store else "square,pad=0.02",
            linewidth=1.2,
            edgecolor="#3a5a80" if store else "#9a6b16",
            facecolor=colour,
        )
        ax.add_patch(box)
        patches[name] = box
        ax.text(x, y, label, ha="center", va="center", fontsize=8.5)
    for edge in edges:
        rad = ARCS.get((edge.source, edge.target), 0.0)
        arrow = FancyArrowPatch(
            posA=POSITIONS[edge.source],
            posB=POSITIONS[edge.target],
            patchA=patches[edge.source],
            patchB=patches[edge.target],
            arrowstyle="<|-|>" if edge.both_ways else "-|>",
            mutation_scale=11,
            linewidth=1.0,
            linestyle=(0, (3, 2)) if edge.dotted else "solid",
            color="#555555",
            connectionstyle=f"arc3,rad={rad}",
        )
        ax.add_patch(arrow)
        if edge.label:
            (x1, y1), (x2, y2) = POSITIONS[edge.source], POSITIONS[edge.target]
            t = LABEL_AT.get((edge.source, edge.target), 0.5)
            # An arc3 curve's middle lies off the straight line by half of rad times its length.
            bow = 2 * t * (1 - t) * rad
            mx = x1 + t * (x2 - x1) + bow * (y2 - y1)
            my = y1 + t * (y2 - y1) - bow * (x2 - x1)
            ax.text(
                mx,
                my,
                edge.label,
                ha="center",
                va="center",
                fontsize=7,
                color="#333333",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6},
            )
    ax.text(
        0.0,
        0.8,
        "boxes: steps and services · square boxes: stores · dashed: off the response path",
        fontsize=7.5,
        color="#555555",
    )
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    plt.close(fig)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Fail if the PNG is out of date.")
    args = parser.parse_args()
    nodes, edges = parse()
    missing = sorted(set(nodes) - set(POSITIONS))
    unknown = sorted(({e.source for e in edges} | {e.target for e in edges}) - set(nodes))
    if missing or unknown:
        print(f"nodes without a position: {missing}; edges to unknown nodes: {unknown}")
        sys.exit(1)
    image = draw(nodes, edges)
    if args.check:
        if not PNG.exists() or PNG.read_bytes() != image:
            print(f"{PNG} is out of date: run python {Path(__file__).relative_to(Path.cwd())}")
            sys.exit(1)
        print(f"{PNG.name} matches the diagram ({len(nodes)} nodes, {len(edges)} edges)")
        return
    PNG.write_bytes(image)
    print(f"{PNG} written: {len(image) // 1024} KiB, {len(nodes)} nodes, {len(edges)} edges")


if __name__ == "__main__":
    main()
