"""The README stays short, every relative link in it, in docs/ and in kernels/README.md resolves (file and #anchor), and
docs/architecture.md draws exactly the layers that pyproject.toml's import-linter contract declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from helpers.paths import ROOT
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "kernels" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target): inline links, images excluded
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)


def prose(text: str) -> str:
    """The Markdown outside fenced code blocks and inline code, where links are links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to -."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = anchor(m.group(1))
            n = seen.get(slug, 0)
            out.add(slug if n == 0 else f"{slug}-{n}")  # GitHub numbers repeated headings
            seen[slug] = n + 1
    return out


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: are not checked here


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 200, f"README.md has {lines} lines: move detail into docs/ (limit 200)"


def test_readme_links_into_every_docs_page():
    linked = {(ROOT / t.split("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    linked |= {(ROOT / "docs" / t.split("#")[0]).resolve() for t in relative_links(ROOT / "docs" / "README.md")}
    missing = [p.name for p in PAGES if p.parent.name == "docs" and p.resolve() not in linked]
    assert not missing, f"docs pages reachable from neither README.md nor docs/README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file, _, frag = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif frag and dest.suffix == ".md" and frag not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{frag} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_catches_a_broken_link_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## The demo, measured\n\n```\n[x](nowhere.md)\n```\n")
    assert anchors(tmp_path / "a.md") == {"title", "the-demo-measured"}
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#the-demo-measured) [gone](missing.md) [web](https://x.org/y) `[c](code.md)`\n")
    assert relative_links(page) == ["a.md#the-demo-measured", "missing.md"]


def layers_contract() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = [c for c in contracts if c.get("type") == "layers"]
    assert len(layers) == 1, "one layers contract expected in pyproject.toml"
    return [" ".join(layer.split()) for layer in layers[0]["layers"]]


def drawn_layers() -> list[str]:
    """The first ```text block of docs/architecture.md: one layer per line, then two or more spaces and a note."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"^```text\n(.*?)^```", text, re.M | re.S)
    assert block, "docs/architecture.md has no ```text block drawing the layers"
    return [re.split(r"\s{2,}", line.strip())[0] for line in block.group(1).splitlines() if line.strip()]


def test_architecture_draws_the_layers_of_the_contract():
    contract, drawn = layers_contract(), drawn_layers()
    assert drawn == contract, ("docs/architecture.md's layer diagram differs from pyproject.toml's layers "
                               f"contract:\n  drawn:    {drawn}\n  contract: {contract}")
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    names = [n for layer in contract for n in re.split(r"\s*[|:]\s*", layer)]
    undescribed = [n for n in names if not re.search(rf"`{re.escape(n)}(/|\.py)`", text)]
    assert not undescribed, f"docs/architecture.md's package table lacks a line for: {undescribed}"


def test_the_docs_name_the_train_settings_by_their_keys_of_now():
    """Issue 25 moved train's settings into sections; the old keys still work, but the docs teach the new ones
    (configuration.md names the old ones on purpose: its table of what moved where)."""
    from melanoma.config.train import MOVED

    old = [f"{page.relative_to(ROOT)}: {key}" for page in PAGES if page.name != "configuration.md"
           for key in re.findall(r"\btrain\.[a-z_]+(?![\w.])", page.read_text(encoding="utf-8")) if key in MOVED]
    assert not old, f"old train keys in the docs (config/train.py MOVED says where they are now): {old}"
