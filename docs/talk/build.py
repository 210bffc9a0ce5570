"""Build the talk: ``docs/talk/build OUTDIR`` → ``OUTDIR/talk.html`` and ``OUTDIR/talk.pdf``.

Theory of operation: nothing on a slide is typed in by hand if the code or a run can say it.

1. **Measure.** Run ``p2p-ledger bench --json`` (``--quick`` unless ``P2P_TALK_BENCH=full``) and
   a real simulator scenario (``split_brain``, with ``--json --plot``) into ``OUTDIR``.
2. **Draw.** The module map is computed from the package's own imports (``ast``), the timeline
   is the scenario run's plot.
3. **Fill.** ``slides.md`` holds the words. Placeholders are resolved against the run:
   ``{{bench:TITLE|CASE|COLUMN}}`` (a bench cell; TITLE and CASE are substrings, CASE
   ``@last`` is the table's last row),
   ``{{scenario:FIELD}}`` (a field of the scenario report), ``{{snippet:PATH:QUALNAME}}`` (the
   source of a function or class, cut from the file by name with ``ast``),
   ``{{figure:modules}}`` / ``{{figure:timeline}}``, ``{{table:TITLE|COL,COL|ROWS}}``.
   An unknown placeholder, a renamed function or a missing bench row stops the build: a slide
   can break the build, never go stale.
4. **Render.** A small Markdown subset → one self-contained HTML file (CSS inline, images as data
   URIs, nothing fetched), printed to PDF by headless Chromium.
"""

from __future__ import annotations

import ast
import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = ROOT / "p2p_ledger"
LAYERS = ["core", "trio", "sim", "harness", "cli"]  # imports point left (see ARCHITECTURE.md)
LAYER_NOTES = {
    "core": "pure, sans-I/O: decides",
    "trio": "drivers: SQLite, websockets, real time",
    "sim": "deterministic simulator",
    "harness": "real processes, relays, namespaces",
    "cli": "tools: command line, demo, bench",
}


class BuildError(Exception):
    """A slide asks for something the code or the runs do not have."""


# ---------------------------------------------------------------- measure

def run(cmd: list[str], out: Path | None = None) -> str:
    print("build:", " ".join(cmd), file=sys.stderr)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    if out is not None:
        out.write_text(result.stdout)
    return result.stdout


def measure(outdir: Path) -> tuple[dict, dict, Path]:
    bench_path = outdir / "bench.json"
    if os.environ.get("P2P_TALK_BENCH_JSON"):  # reuse a bench run (e.g. a full one made earlier)
        shutil.copy(os.environ["P2P_TALK_BENCH_JSON"], bench_path)
    else:
        size = [] if os.environ.get("P2P_TALK_BENCH") == "full" else ["--quick"]
        run([sys.executable, "-m", "p2p_ledger", "bench", *size, "--json"], bench_path)
    bench = json.loads(bench_path.read_text())
    plots = outdir / "plots"
    plots.mkdir(exist_ok=True)
    text = run([sys.executable, "-m", "p2p_ledger", "scenario", "run", "--json", "--plot",
                str(plots), "scenarios/split_brain.toml"])
    scenario = json.loads(text.splitlines()[0])
    (outdir / "scenario.json").write_text(json.dumps(scenario, indent=1))
    pngs = sorted(plots.glob("split_brain*.png"))
    if not pngs:
        raise BuildError("the scenario run wrote no timeline plot")
    return bench, scenario, pngs[0]


# ---------------------------------------------------------------- draw

def module_graph() -> tuple[dict[str, list[str]], dict[tuple[str, str], int]]:
    """Modules per layer, and the number of imports from one layer into another."""
    modules: dict[str, list[str]] = {layer: [] for layer in LAYERS}
    edges: dict[tuple[str, str], int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2 or rel.parts[0] not in modules or rel.name == "__init__.py":
            continue
        layer = rel.parts[0]
        modules[layer].append(rel.stem)
        for node in ast.walk(ast.parse(path.read_text())):
            target = None
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = list(rel.parts[:-1])[: len(rel.parts) - node.level]
                    target = (base + (node.module or "").split("."))[0] if base else \
                        (node.module or "").split(".")[0]
                elif node.module and node.module.startswith("p2p_ledger."):
                    target = node.module.split(".")[1]
            if target in modules and target != layer:
                edges[(layer, target)] = edges.get((layer, target), 0) + 1
    return modules, edges


def modules_svg() -> str:
    modules, edges = module_graph()
    col_w, gap, top, row_h = 200, 40, 70, 24
    height = top + max(len(m) for m in modules.values()) * row_h + 30
    width = len(LAYERS) * (col_w + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 60}" '
             f'class="diagram" font-family="DejaVu Sans, sans-serif">']
    x_of = {layer: i * (col_w + gap) + gap // 2 for i, layer in enumerate(LAYERS)}
    colors = {"core": "#1f6f5c", "trio": "#2f5d8a", "sim": "#7a4f9a", "harness": "#9a6a2f",
              "cli": "#5f6368"}
    for layer in LAYERS:
        x, names = x_of[layer], sorted(modules[layer])
        parts.append(f'<rect x="{x}" y="10" width="{col_w}" height="{height}" rx="10" '
                     f'fill="{colors[layer]}" fill-opacity="0.08" stroke="{colors[layer]}"/>')
        parts.append(f'<text x="{x + col_w / 2}" y="36" text-anchor="middle" font-size="20" '
                     f'font-weight="bold" fill="{colors[layer]}">{layer}/</text>')
        parts.append(f'<text x="{x + col_w / 2}" y="56" text-anchor="middle" font-size="11" '
                     f'fill="#444">{html.escape(LAYER_NOTES[layer])}</text>')
        for i, name in enumerate(names):
            parts.append(f'<text x="{x + 14}" y="{top + 16 + i * row_h}" font-size="15" '
                         f'font-family="DejaVu Sans Mono, monospace" fill="#222">'
                         f'{html.escape(name)}.py</text>')
    # One line per layer pair, under the columns: who imports whom, how often.
    y = height + 30
    summary = ", ".join(f"{a} → {b} ×{n}" for (a, b), n in sorted(edges.items(),
                        key=lambda kv: (LAYERS.index(kv[0][0]), LAYERS.index(kv[0][1]))))
    upward = [f"{a} → {b}" for (a, b) in edges if LAYERS.index(b) > LAYERS.index(a)]
    parts.append(f'<text x="{gap // 2}" y="{y}" font-size="13" fill="#333">imports: '
                 f'{html.escape(summary)}</text>')
    verdict = ("every import points left (toward core)" if not upward
               else "imports pointing right: " + ", ".join(upward))
    parts.append(f'<text x="{gap // 2}" y="{y + 22}" font-size="13" font-weight="bold" '
                 f'fill="{"#1f6f5c" if not upward else "#b00020"}">{html.escape(verdict)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------- fill

def snippet(spec: str) -> str:
    path_text, _, qualname = spec.rpartition(":")
    path = ROOT / path_text
    if not path.is_file():
        raise BuildError(f"snippet: no file {path_text}")
    source = path.read_text()
    scope: list[ast.stmt] = ast.parse(source).body
    node: ast.AST | None = None
    for part in qualname.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                         ast.ClassDef)) and n.name == part), None)
        if node is None:
            raise BuildError(f"snippet: {qualname} not found in {path_text} (renamed?)")
        scope = node.body  # type: ignore[attr-defined]
    assert node is not None
    lines = source.splitlines()[node.lineno - 1 - len(node.decorator_list):  # type: ignore
                                node.end_lineno]  # type: ignore[attr-defined]
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    body = "\n".join(line[indent:] for line in lines)
    # Fit the code in what a slide leaves under a few bullets (~290 px), never below 9 px.
    lines_n, width = body.count("\n") + 1, max(len(line) for line in body.splitlines())
    size = max(9.0, min(16.0, 290 / (lines_n * 1.3), 1120 / (width * 0.61)))
    return (f'<div class="snippet"><div class="where">{html.escape(path_text)} · '
            f'{html.escape(qualname)}</div><pre style="font-size:{size:.1f}px"><code>'
            f'{html.escape(body)}</code></pre></div>')


def find_table(bench: dict, title: str) -> dict:
    for table in bench["tables"]:
        if title.lower() in table["title"].lower():
            return table
    raise BuildError(f"bench: no table titled like {title!r}; tables: "
                     + "; ".join(t["title"] for t in bench["tables"]))


def fmt(value: object) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def bench_cell(bench: dict, spec: str) -> str:
    title, case, column = spec.split("|")
    table = find_table(bench, title)
    if case == "@last":  # the largest size measured (rows grow with the size in every table)
        case = str(table["rows"][-1][table["columns"][0]])
    for row in table["rows"]:
        if case.lower() in str(row.get(table["columns"][0], "")).lower():
            if column not in row or row[column] is None:
                raise BuildError(f"bench: row {case!r} of {table['title']!r} has no {column!r}")
            return fmt(row[column])
    raise BuildError(f"bench: no row like {case!r} in {table['title']!r}")


def bench_table(bench: dict, spec: str) -> str:
    title, columns_text, rows_text = (spec.split("|") + [""])[:3]
    table = find_table(bench, title)
    columns = [c for c in columns_text.split(",") if c] or table["columns"]
    for column in columns:
        if column not in table["columns"]:
            raise BuildError(f"bench: table {table['title']!r} has no column {column!r}")
    rows = table["rows"]
    if rows_text:
        wanted = [w.lower() for w in rows_text.split(";")]
        rows = [r for r in rows if any(w in str(r[table["columns"][0]]).lower() for w in wanted)]
        if len(rows) < len(wanted):
            raise BuildError(f"bench: rows {wanted} not all in {table['title']!r}")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c, '')))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return (f'<table class="bench"><caption>{html.escape(table["title"])}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


class Filler:
    def __init__(self, bench: dict, scenario: dict, timeline: Path) -> None:
        self.bench, self.scenario, self.timeline = bench, scenario, timeline
        self.used: set[str] = set()

    def __call__(self, match: re.Match[str]) -> str:
        kind, _, arg = match.group(1).partition(":")
        self.used.add(kind)
        if kind == "bench":
            return bench_cell(self.bench, arg)
        if kind == "table":
            return bench_table(self.bench, arg)
        if kind == "scenario":
            if arg not in self.scenario:
                raise BuildError(f"scenario report has no field {arg!r}")
            return fmt(self.scenario[arg])
        if kind == "snippet":
            return snippet(arg)
        if kind == "figure" and arg == "modules":
            return f'<figure class="figure" data-figure="modules">{modules_svg()}</figure>'
        if kind == "figure" and arg == "timeline":
            return (f'<figure class="figure" data-figure="timeline"><img alt="split_brain '
                    f'timeline" src="{data_uri(self.timeline)}"></figure>')
        raise BuildError(f"unknown placeholder {{{{{match.group(1)}}}}}")


# ---------------------------------------------------------------- render

def inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![*\w])\*([^*]+)\*(?!\w)", r"<em>\1</em>", text)


def markdown(block: str) -> str:
    """The subset the slides use: #/## titles, bullets, paragraphs, ``` code, | tables, raw
    HTML lines (placeholders become HTML before this runs and are passed through)."""
    out: list[str] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            code = html.escape("\n".join(lines[i + 1:j]))
            out.append(f"<pre><code>{code}</code></pre>")
            i = j + 1
            continue
        if line.startswith("\x00"):  # a resolved placeholder: HTML, kept as is
            out.append(line[1:].replace("\x01", "\n"))
        elif line.startswith("# "):
            out.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif re.match(r"\s*[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                depth = "sub" if lines[i].startswith("  ") else ""
                items.append(f'<li class="{depth}">{inline(lines[i].strip()[2:])}</li>')
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    tag = "th" if not rows else "td"
                    rows.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in cells)
                                + "</tr>")
                i += 1
            out.append('<table class="md">' + "".join(rows) + "</table>")
            continue
        elif line.startswith(">"):
            out.append(f"<blockquote>{inline(line[1:].strip())}</blockquote>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


def render(source: str, filler: Filler) -> tuple[str, list[str]]:
    slides_html, titles = [], []
    source = re.sub(r"<!--.*?-->", "", source, flags=re.S)
    for number, raw in enumerate(re.split(r"^---\s*$", source, flags=re.M), start=1):
        raw = raw.strip()
        if not raw:
            continue
        body, _, notes = raw.partition("\nNote:")
        # Placeholders alone on a line become raw HTML blocks; inline ones are filled as text.
        body = re.sub(r"^\{\{([^}]+)\}\}$", lambda m: "\x00" + filler(m).replace("\n", "\x01"),
                      body, flags=re.M)
        body = re.sub(r"\{\{([^}]+)\}\}", filler, body)
        title = re.search(r"^#{1,2} (.+)$", body, flags=re.M)
        if title is None:
            raise BuildError(f"slide {number} has no title")
        titles.append(title.group(1).strip())
        kind = "title" if body.lstrip().startswith("# ") else "content"
        slides_html.append(
            f'<section class="slide {kind}" id="s{len(titles)}">{markdown(body)}'
            f'<div class="num">{len(titles)}</div>'
            f'<aside class="notes">{markdown(notes.strip())}</aside></section>')
    page = (HERE / "template.html").read_text()
    page = page.replace("/*CSS*/", (HERE / "talk.css").read_text())
    page = page.replace("<!--SLIDES-->", "\n".join(slides_html))
    return page, titles


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise BuildError("no chromium on PATH: apt-get install -y chromium")


def print_pdf(html_path: Path, pdf_path: Path) -> None:
    run([find_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw",
         f"--print-to-pdf={pdf_path}", html_path.as_uri()])
    if not pdf_path.is_file():
        raise BuildError("chromium wrote no PDF")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: docs/talk/build OUTDIR\n\n" + (__doc__ or ""), file=sys.stderr)
        return 2
    outdir = Path(argv[0]).resolve()
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        bench, scenario, timeline = measure(outdir)
        filler = Filler(bench, scenario, timeline)
        page, titles = render((HERE / "slides.md").read_text(), filler)
        html_path = outdir / "talk.html"
        html_path.write_text(page)
        (outdir / "titles.json").write_text(json.dumps(titles, indent=1))
        print_pdf(html_path, outdir / "talk.pdf")
    except (BuildError, OSError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    print(f"{outdir / 'talk.html'}\n{outdir / 'talk.pdf'}  ({len(titles)} slides)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
