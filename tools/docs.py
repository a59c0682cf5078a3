"""Offline docs, for machines without Quarto: nbdev's processors (`proc_nbs`: directives, `show_doc`, hidden cells)
then nbconvert, one HTML page per notebook in `_site/`, and README.md from `nbs/index.ipynb`.

Pages have no Jupyter prompts, pygments-highlighted code, a sidebar in the order of `nbs/sidebar.yml`, and math
typeset at build time by KaTeX under node (the page needs no JavaScript and nothing from the network; KaTeX is
installed with npm into `_site/katex/` on first use). Styles: tools/docs_static/site.css, then nbs/styles.css.
`--check` opens every page in headless Chromium and checks it shows the notebook's title, its section headings and
its `show_doc` entries, that every formula is typeset and no raw TeX is left, that the sidebar links every page, and
that there are no prompts and no remote assets; it saves a screenshot of each page in `_site/screenshots/`.
Real Quarto (`nbdev_docs`) reads nbs/_quarto.yml instead."""
import argparse, configparser, functools, html, json, os, re, shutil, subprocess, sys, tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import jinja2, nbformat, nbclient, yaml
from nbconvert import HTMLExporter, MarkdownExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbdev.serve import proc_nbs
from pygments.formatters import HtmlFormatter

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_site"
EXECUTE = ("index",)   # notebooks whose outputs the pages show (the others are stored without outputs)
KATEX = "0.19.1"       # npm package, pinned
KATEX_DIR = SITE / "katex" / "node_modules" / "katex"

def _offline(nb):
    "What Quarto would do with nbdev's output: front matter -> title and description; `echo: false` hides code."
    for c in nb.cells:
        if c.cell_type == "raw" and c.source.startswith("---"):
            fm = yaml.safe_load(c.source.strip("-\n"))
            c.cell_type, c.source = "markdown", f"# {fm.get('title', '')}\n\n> {fm.get('description', '')}"
            c.pop("outputs", None); c.pop("execution_count", None)
        if c.cell_type == "code":   # warnings printed while building the docs are not content
            c.outputs = [o for o in c.outputs if not (o.output_type == "stream" and o.name == "stderr")]
            for o in c.outputs:     # Quarto-only link attributes of show_doc's [source](...) links
                if "text/markdown" in o.get("data", {}):
                    o.data["text/markdown"] = re.sub(r"\{target=[^}]*\}", "", o.data["text/markdown"])
        if c.cell_type == "code" and re.search(r"^#\|\s*echo:\s*false", c.source, re.M):
            c.metadata.setdefault("tags", []).append("remove_input")
    return nb

CODE = re.compile(r"^(`{3,}|~{3,}).*?^\1|(`+).+?\2", re.M | re.S)   # fenced blocks, code spans: no math in them
MATH = re.compile(r"(?<![\\$])\$\$(.+?)\$\$|(?<![\\$])\$(?=\S)((?:[^$\\\n]|\\.|\n(?!\s*\n))+?)(?<=\S)\$(?!\d)", re.S)

class _Math(IPythonRenderer):
    """Markdown to HTML with each formula left as a placeholder (private-use characters around its index in `formulas`).
    `$` and `$$` math is taken out before the markdown is parsed, as pandoc does: markdown never splits it."""
    formulas: list = []
    def keep(self, tex, display): self.formulas.append((tex, display)); return f"\ue000{len(self.formulas) - 1}\ue001"
    def text(self, t):
        "Markdown text (no code) with its formulas kept and any other `$` escaped: markdown shows it as a dollar."
        return re.sub(r"(?<!\\)\$", r"\\$", MATH.sub(lambda m: self.keep(m[1] or m[2], m[1] is not None), t))
    def html(self, md):
        out, at = [], 0
        for m in CODE.finditer(md): out += [self.text(md[at:m.start()]), m[0]]; at = m.end()
        return MarkdownWithMath(renderer=self).render("".join(out) + self.text(md[at:]))
    def inline_math(self, body): return self.keep(body, False)       # \( \) math
    def block_math(self, body): return self.keep(body, True)         # \[ \] math
    def latex_environment(self, name, body): return self.keep(f"\\begin{{{name}}}{body}\\end{{{name}}}", True)

class _Page(HTMLExporter):
    "nbconvert's HTML exporter with math left to KaTeX."
    @jinja2.pass_context
    def markdown2html(self, context, source):
        return _Math(escape=False, attachments=context.get("cell", {}).get("attachments", {}),
                     anchor_link_text=self.anchor_link_text).html(source)

def _exporter(cls, **kw):
    e = cls(**kw)
    e.register_preprocessor("nbconvert.preprocessors.TagRemovePreprocessor", enabled=True)
    e.config.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    e.config.TagRemovePreprocessor.enabled = True
    return cls(config=e.config, **kw)

@functools.cache
def processed(stem: str):
    "The processed notebook `_proc/<stem>.ipynb`, executed if it is in `EXECUTE`, made ready for nbconvert."
    nb = nbformat.read(ROOT / "_proc" / f"{stem}.ipynb", as_version=4)
    if stem in EXECUTE:
        nbclient.NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(ROOT / "nbs")}}).execute()
    return _offline(nb)   # exporters deep-copy the notebook, so one execution serves the pages and the README

def sidebar() -> list[str]:
    "The notebooks (stems) of `website: sidebar: contents:` in nbs/sidebar.yml, in order."
    def flat(items):
        for it in items:
            if isinstance(it, str): yield it
            elif isinstance(it, dict): yield from ([it["href"]] if "href" in it else flat(it.get("contents", [])))
    contents = yaml.safe_load((ROOT / "nbs/sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    return [Path(f).stem for f in flat(contents)]

def notebooks() -> list[str]:
    "The notebooks of nbs/ (stems) that nbdev builds pages for."
    return sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith(("_", ".")))

def title(stem: str) -> str:
    "The notebook's first `# ` heading."
    cells = json.loads((ROOT / "nbs" / f"{stem}.ipynb").read_text())["cells"]
    heads = [h for c in cells if c["cell_type"] == "markdown"
             for h in re.findall(r"^# (.+)$", "".join(c["source"]), re.M)]
    return heads[0].strip() if heads else stem

def katex() -> Path:
    "KaTeX's package folder; installed (pinned) with npm on first use."
    if not (KATEX_DIR / "package.json").exists():
        if not shutil.which("npm"): sys.exit("docs: math needs node and npm (Debian: apt-get install nodejs npm)")
        print(f"installing katex@{KATEX} into {KATEX_DIR.parents[1]}", file=sys.stderr)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(KATEX_DIR.parents[1]),
                        f"katex@{KATEX}"], check=True)
    return KATEX_DIR

def typeset(formulas: list) -> list[str]:
    "KaTeX's HTML for each (tex, display) formula, in one node run; errors show as red `.katex-error` text."
    js = ("const k = require(process.argv[1]); let s = ''; process.stdin.on('data', d => s += d).on('end', () =>"
          " process.stdout.write(JSON.stringify(JSON.parse(s).map(([t, d]) =>"
          " k.renderToString(t, {displayMode: d, throwOnError: false})))))")
    return json.loads(subprocess.run(["node", "-e", js, str(katex())], input=json.dumps(formulas), capture_output=True,
                                     text=True, check=True).stdout)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="katex/node_modules/katex/dist/katex.min.css">
<link rel="stylesheet" href="site.css">
</head><body>
<nav class="sidebar"><a class="project" href="index.html">{project}</a><ul>
{links}
</ul></nav>
<main>
{body}
</main></body></html>
"""

def _front_matter(stem: str) -> dict:
    "The YAML front matter nbdev wrote into `_proc/<stem>.ipynb` (title, description, output-file)."
    raw = [c.source for c in nbformat.read(ROOT / "_proc" / f"{stem}.ipynb", as_version=4).cells
           if c.cell_type == "raw" and c.source.startswith("---")]
    return yaml.safe_load(raw[0].strip("-\n")) if raw else {}

def build() -> list[Path]:
    "Process the notebooks and write `_site/<notebook>.html` for each, in sidebar.yml's order; return the pages."
    out = SITE
    cwd = os.getcwd(); os.chdir(ROOT / "nbs")   # show_doc cells run where their notebook is, as in Jupyter
    try: proc_nbs(path=str(ROOT / "nbs"), force=True, n_workers=0)
    finally: os.chdir(cwd)
    out.mkdir(exist_ok=True)
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini"); cfg = cfg["DEFAULT"]
    (out / "site.css").write_text("\n".join([HtmlFormatter(style="friendly").get_style_defs(".highlight"),
                                             (ROOT / "tools/docs_static/site.css").read_text(),
                                             (ROOT / "nbs/styles.css").read_text()]))
    built = [s for s in notebooks() if (ROOT / "_proc" / f"{s}.ipynb").exists()]
    # sidebar.yml's order; a notebook it does not list yet goes last (the check says so)
    pages = [(s, title(s)) for s in [s for s in sidebar() if s in built] + [s for s in built if s not in sidebar()]]
    _Math.formulas[:] = []
    site_url = f'{cfg["doc_host"]}{cfg["doc_baseurl"]}/'
    published = {site_url + _front_matter(s).get("output-file", f"{s}.html"): f"{s}.html" for s, _ in pages}
    bodies = {}
    for stem, _ in pages:
        body, _ = _exporter(_Page, template_name="basic", exclude_input_prompt=True,
                            exclude_output_prompt=True).from_notebook_node(processed(stem))
        for url, local in published.items(): body = body.replace(url, local)   # show_doc links: to these pages
        # heading ids in lower case, as nbdev's links to them are
        body = re.sub(r'(<h[1-6] id="|class="anchor-link" href="#)([^"]+)', lambda m: m[1] + m[2].lower(), body)
        bodies[stem] = body
    maths = typeset(_Math.formulas) if _Math.formulas else []
    for stem, name in pages:
        links = "\n".join(f'<li><a href="{s}.html"' + (' class="current" aria-current="page"' if s == stem else "")
                          + f">{html.escape(t)}</a></li>" for s, t in pages)
        body = re.sub("\ue000(\\d+)\ue001", lambda m: maths[int(m[1])], bodies[stem])
        (out / f"{stem}.html").write_text(PAGE.format(title=html.escape(name), project=html.escape(cfg["lib_name"]),
                                                      links=links, body=body))
    for old in set(out.glob("*.html")) - {out / f"{s}.html" for s, _ in pages}: old.unlink()   # renamed notebooks
    return [out / f"{s}.html" for s, _ in pages]

def readme() -> str:
    "README.md text: nbs/index.ipynb, executed, with hidden cells and directives removed, as markdown."
    md, _ = _exporter(MarkdownExporter).from_notebook_node(processed("index"))
    md = re.sub(r"<style.*?</style>", "", md, flags=re.S)     # pandas' inline CSS
    return re.sub(r"\n{3,}", "\n\n", md).strip() + "\n"

def expected(stem: str) -> tuple[list[str], list[str], int]:
    "Headings (title included) of the markdown cells, names of the `show_doc` entries and number of formulas of a page."
    heads, docs, mds = [], [], []
    for c in processed(stem).cells:
        if c.cell_type == "markdown": heads += re.findall(r"^#{1,3} (.+)$", c.source, re.M); mds.append(c.source)
        for o in c.get("outputs", []):
            md = o.get("data", {}).get("text/markdown", "")
            docs += re.findall(r"^#{2,4} (\S+)$", md, re.M); mds.append(md)
    n = 0
    for md in mds:
        r = _Math(escape=False); r.formulas = []; r.html(md); n += len(r.formulas)
    return heads, docs, n

def chromium(chrome: str, page: Path, *args) -> str:
    "The DOM headless Chromium printed for `page` (with `--dump-dom`), in a fresh profile, with no network services."
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
                               page.as_uri()],
                              capture_output=True, text=True, timeout=120).stdout

def check(pages: list[Path]) -> int:
    "Open each page in headless Chromium; print a line per check (two per page); return the number of failures."
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chrome is None: sys.exit("docs check: no Chromium found (Debian: apt-get install chromium)")
    listed, nbs = sidebar(), notebooks()
    unlisted, absent = [s for s in nbs if s not in listed], [s for s in listed if s not in nbs]
    print(f"FAIL nbs/sidebar.yml: does not list {unlisted}, lists missing {absent} (run: nbdev_sidebar)"
          if unlisted or absent else f"ok   nbs/sidebar.yml: lists the {len(nbs)} notebooks")
    failed = bool(unlisted or absent)
    shots = SITE / "screenshots"; shutil.rmtree(shots, ignore_errors=True); shots.mkdir()
    with ThreadPoolExecutor(4) as pool:   # chromium is mostly startup: run a few at once
        doms = list(pool.map(lambda p: chromium(chrome, p, "--dump-dom", "--window-size=1280,2000",
                                                f"--screenshot={shots / (p.stem + '.png')}"), pages))
    for page, dom in zip(pages, doms):
        heads, docs, n_math = expected(page.stem)
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)).replace("¶", "")
        rendered = {html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>|¶", "", h))).strip()
                    for h in re.findall(r"<h[1-4][^>]*>(.*?)</h[1-4]>", dom, re.S)}
        # markdown eats __x__, `x` and [x](y)
        plain = lambda s: re.sub(r"[`*$\\_]", "", re.sub(r"\[(.*?)\]\(.*?\)", r"\1", s)).strip()
        missing = [h for h in heads + docs if plain(h) not in {plain(r) for r in rendered}]
        module = re.search(r"#\| export\b(?!i)", (ROOT / "nbs" / f"{page.stem}.ipynb").read_text())   # index, colab: pages, no public API
        ok = bool(heads) and (bool(docs) or not module) and not missing and len(text) > 500
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {page.name}: {len(heads)} headings, {len(docs)} show_doc entries"
              + (f", missing {missing[:5]}" if missing else ""))
        # what a reader sees: no code, no MathML (it holds the TeX), no markup
        seen = re.sub(r"<(style|script|pre|code|math)\b.*?</\1>", " ", dom, flags=re.S)
        seen = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", seen)))
        nav = re.search(r'<nav class="sidebar">(.*?)</nav>', dom, re.S)
        linked = re.findall(r'<li><a href="([^"#]+)\.html"', nav[1]) if nav else []
        current = re.findall(r'<a href="([^"]+)\.html" class="current"', nav[1]) if nav else []
        n_katex, errors = dom.count('class="katex"'), re.findall(r'class="katex-error" title="([^"]*)', dom)
        problems = [f"{n_katex} of {n_math} formulas typeset"] * (n_katex != n_math)
        problems += [f"KaTeX error {e!r}" for e in errors[:3]]
        problems += [f"raw TeX {m!r}" for m in re.findall(r"\$(?=\S)[^$]+?(?<=\S)\$(?!\d)", seen)[:3]]
        problems += [f"sidebar links {linked}, not {[p.stem for p in pages]}"] * (linked != [p.stem for p in pages])
        problems += ["sidebar does not highlight this page"] * (current != [page.stem])
        problems += [f"prompt {m!r}" for m in re.findall(r"(?:In|Out)\s?\[[\d ]*\]:", seen)[:3]]
        remote = re.findall(r'<(?:script|link|img|iframe)\b[^>]*(?:src|href)="((?:https?:)?//[^"]+)', page.read_text())
        problems += [f"remote asset {m}" for m in remote[:3]]
        problems += ["no screenshot"] * (not (shots / f"{page.stem}.png").exists())
        failed += bool(problems)
        print(f"FAIL {page.name} rendering: " + "; ".join(problems) if problems else
              f"ok   {page.name} rendering: {n_math} formulas typeset, sidebar of {len(linked)} pages, no prompts,"
              f" no remote assets, screenshot {shots.relative_to(ROOT) / (page.stem + '.png')}")
    return failed

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="open the pages in headless Chromium and check them")
    ap.add_argument("--readme", action="store_true", help="write README.md from nbs/index.ipynb")
    a = ap.parse_args()
    pages = build()
    print(f"built {len(pages)} pages in {SITE}")
    if a.readme: (ROOT / "README.md").write_text(readme())
    if a.check:
        fresh = (ROOT / "README.md").read_text() == readme()
        print(f"{'ok  ' if fresh else 'FAIL'} README.md: " + ("matches nbs/index.ipynb" if fresh else
              "out of date with nbs/index.ipynb (run: python tools/docs.py --readme)"))
        sys.exit(1 if check(pages) or not fresh else 0)
