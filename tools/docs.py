"""Offline docs, for machines without Quarto: nbdev's processors (`proc_nbs`: directives, `show_doc`, hidden cells)
then nbconvert, one HTML page per notebook in `_site/`, and README.md from `nbs/index.ipynb`.
`--check` opens every page in headless Chromium and checks it shows the notebook's title, its section headings
and its `show_doc` entries. Real Quarto (`nbdev_docs`) reads nbs/_quarto.yml instead."""
import argparse, json, re, shutil, subprocess, sys, tempfile
from pathlib import Path
import nbformat, nbclient, yaml
from nbconvert import HTMLExporter, MarkdownExporter
from nbdev.serve import proc_nbs

ROOT = Path(__file__).resolve().parents[1]
EXECUTE = ("index",)   # notebooks whose outputs the pages show (the others are stored without outputs)

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

def _exporter(cls, **kw):
    e = cls(**kw)
    e.register_preprocessor("nbconvert.preprocessors.TagRemovePreprocessor", enabled=True)
    e.config.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    e.config.TagRemovePreprocessor.enabled = True
    return cls(config=e.config, **kw)

def processed(stem: str):
    "The processed notebook `_proc/<stem>.ipynb`, executed if it is in `EXECUTE`, made ready for nbconvert."
    nb = nbformat.read(ROOT / "_proc" / f"{stem}.ipynb", as_version=4)
    if stem in EXECUTE: nbclient.NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(ROOT / "nbs")}}).execute()
    return _offline(nb)

def build(out: Path = ROOT / "_site") -> list[Path]:
    "Process the notebooks and write `out/<notebook>.html`; return the pages."
    proc_nbs(path=str(ROOT / "nbs"), force=True, n_workers=0)
    out.mkdir(exist_ok=True)
    pages = []
    for nb_path in sorted((ROOT / "_proc").glob("*.ipynb")):
        html, _ = _exporter(HTMLExporter, template_name="lab").from_notebook_node(processed(nb_path.stem))
        page = out / f"{nb_path.stem}.html"
        page.write_text(html)
        pages.append(page)
    return pages

def readme() -> str:
    "README.md text: nbs/index.ipynb, executed, with hidden cells and directives removed, as markdown."
    md, _ = _exporter(MarkdownExporter).from_notebook_node(processed("index"))
    md = re.sub(r"<style.*?</style>", "", md, flags=re.S)     # pandas' inline CSS
    return re.sub(r"\n{3,}", "\n\n", md).strip() + "\n"

def expected(nb_path: Path) -> tuple[list[str], list[str]]:
    "Headings of the markdown cells and the names of the `show_doc` entries of a processed notebook."
    nb = json.loads(nb_path.read_text())
    heads, docs = [], []
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown": heads += re.findall(r"^#{1,3} (.+)$", src, re.M)
        for o in c.get("outputs", []):
            docs += re.findall(r"^#{2,4} (\S+)$", "".join(o.get("data", {}).get("text/markdown", [])), re.M)
    return heads, docs

def check(pages: list[Path]) -> int:
    "Render each page in headless Chromium; print one line per page; return the number of failures."
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chrome is None: sys.exit("docs check: no Chromium found (Debian: apt-get install chromium)")
    failed = 0
    for page in pages:
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                  f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                                 capture_output=True, text=True, timeout=120).stdout
        heads, docs = expected(ROOT / "_proc" / f"{page.stem}.ipynb")
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)).replace("¶", "")
        rendered = {re.sub(r"\s+", " ", re.sub(r"<[^>]+>|¶", "", h)).strip()
                    for h in re.findall(r"<h[1-4][^>]*>(.*?)</h[1-4]>", dom, re.S)}
        plain = lambda s: re.sub(r"[`*$\\_]", "", s).strip()   # markdown eats __x__ and `x`
        missing = [h for h in heads + docs if plain(h) not in {plain(r) for r in rendered}]
        ok = bool(heads) and (bool(docs) or page.stem == "index") and not missing and len(text) > 500
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {page.name}: {len(heads)} headings, {len(docs)} show_doc entries"
              + (f", missing {missing[:5]}" if missing else ""))
    return failed

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="open the pages in headless Chromium and check them")
    ap.add_argument("--readme", action="store_true", help="write README.md from nbs/index.ipynb")
    a = ap.parse_args()
    pages = build()
    print(f"built {len(pages)} pages in {ROOT / '_site'}")
    if a.readme: (ROOT / "README.md").write_text(readme())
    if a.check:
        fresh = (ROOT / "README.md").read_text() == readme()
        print(f"{'ok  ' if fresh else 'FAIL'} README.md: " + ("matches nbs/index.ipynb" if fresh else
              "out of date with nbs/index.ipynb (run: python tools/docs.py --readme)"))
        sys.exit(1 if check(pages) or not fresh else 0)
