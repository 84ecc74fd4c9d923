"""The report in a real headless browser: Debian's chromium driven by playwright (no downloaded browser).

Each page must load from file://, make no request but for itself, log no console error, draw every
section, show a sentence's metrics on hover, and leave a screenshot next to the report.

Set up with ``bash scripts/install-browser.sh``. Without a browser this module skips locally and
FAILS under ``CI=true``.

Data: the published Thought Anchors trace incorrect/problem_2189 (24 sentences: its gpt-4o labels
and importance metrics) with receiver-head data and the information-flow matrix computed for real from
SmolLM2 on that text, and a real attribution graph (the circuit-tracer comparison case tiny_llama_jumprelu_skip:
a seeded random 3-layer Llama with seeded JumpReLU transcoders, on "The capital of France is"; with random
transcoders on SmolLM2 no feature survives pruning); its suppression and
counterfactual matrices are synthetic (the page says so), as are all matrices of the 321-sentence layout check.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from anchorlens import ReportData, Trace, build_report
from anchorlens.report import report_data_from_reference
from anchorlens.report.data import SECTIONS
from conftest import REFERENCE, load_json

CHROMIUM = Path(os.environ.get("ANCHORLENS_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TRACES = REFERENCE / "deepseek-r1-distill-llama-8b"
SMALL = TRACES / "incorrect_base_solution" / "problem_2189"  # 24 sentences, 815 SmolLM2 tokens
LARGE = TRACES / "incorrect_base_solution" / "problem_4164"  # 321 sentences
SYNTHETIC = "Synthetic matrix (random, seeded), for layout only: not a measurement."
PROXIMITY_IGNORE = 4  # docs/methods.md 1.5
SECTIONS_WITH_PICTURES = {"importance": "canvas", "graph": "svg", "receiver": "canvas", "head_attention": "canvas",
                          "suppression": "canvas", "counterfactual": "canvas", "flow": "canvas", "attribution": "svg"}
CANVASES = {"importance", "receiver", "head_attention", "suppression", "counterfactual", "flow"}

pytestmark = pytest.mark.slow


def _unavailable(reason: str):
    message = f"{reason}: run `bash scripts/install-browser.sh` (Debian's chromium + the playwright package)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("the browser test cannot run under CI=true: " + message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    """A headless chromium with a fresh profile; every page's requests are recorded and any but the report aborted."""
    if not CHROMIUM.exists():
        _unavailable(f"no browser at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed")
    profile = tempfile.mkdtemp(prefix="anchorlens-chromium-")
    try:
        with sync_playwright() as driver:
            context = driver.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
                viewport={"width": 1280, "height": 900}, service_workers="block",
            )
            yield context
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class OpenedReport:
    """A report page plus what it did: requests made (and blocked) and console errors."""

    def __init__(self, context, html: Path):
        self.url = html.resolve().as_uri()
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.page = context.new_page()
        self.page.route("**/*", self._route)
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("dialog", lambda dialog: (self.errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        self.page.goto(self.url)
        self.page.wait_for_selector("body[data-rendered=true]", timeout=30_000)

    def _route(self, route):
        if route.request.url == self.url:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def assert_offline_and_clean(self):
        assert self.requests == [self.url], f"the page made requests besides itself: {self.requests}"
        assert self.blocked == []
        assert self.errors == [], f"console errors: {self.errors}"

    def sections(self) -> dict[str, dict]:
        return self.page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('[data-section]')].map(e => [
                   e.dataset.section,
                   {text: e.innerText.trim(), pictures: e.querySelectorAll('canvas, svg').length,
                    notComputed: e.querySelectorAll('.not-computed').length}]))"""
        )

    def assert_every_section_drawn(self, min_colours: int, absent: frozenset = frozenset()) -> dict[str, dict]:
        """Every section has text, none but ``absent`` says "not computed" (those must), each picture is drawn
        and no canvas is blank."""
        sections = self.sections()
        assert set(sections) == set(SECTIONS)
        for name, seen in sections.items():
            assert seen["text"], f"section {name} is empty"
            if name in absent:
                assert seen["notComputed"] == 1, f"section {name} must say it was not computed"
                continue
            assert seen["notComputed"] == 0, f"section {name} says 'not computed' although its data was given"
            if name in SECTIONS_WITH_PICTURES:
                assert seen["pictures"] >= 1, f"section {name} drew no {SECTIONS_WITH_PICTURES[name]}"
        colours = self.canvas_colours()
        assert set(colours) == CANVASES - absent
        for name, count in colours.items():
            assert count > min_colours, f"the {name} canvas looks blank ({count} colours)"
        return sections

    def canvas_colours(self) -> dict[str, int]:
        """Per section, the number of distinct colours drawn on its canvas (0 when blank)."""
        return self.page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('[data-section] canvas')].map(c => {
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   const seen = new Set();
                   for (let p = 0; p < d.length; p += 4) if (d[p + 3]) seen.add(d[p] << 16 | d[p + 1] << 8 | d[p + 2]);
                   return [c.closest('[data-section]').dataset.section, seen.size];
               }))"""
        )

    def background(self, i: int) -> tuple[int, ...]:
        css = self.page.eval_on_selector(f'.sentence[data-i="{i}"]', "e => getComputedStyle(e).backgroundColor")
        return tuple(int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        if full_page:  # from the top, so that the sticky toolbar sits where it belongs
            self.page.mouse.move(2, 600)
            self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 10_000
        return path


# ---------------------------------------------------------------------- data: real receiver heads from SmolLM2


@torch.inference_mode()
def smol_sentence_attention(model, trace: Trace) -> np.ndarray:
    """``[layer, head, n, n]``: each head's attention averaged over the token pairs of two sentences."""
    n, positions = trace.n_sentences, trace.n_tokens
    average = torch.zeros(n, positions)  # row i: 1 / len(i) on sentence i's tokens
    for i, (start, end) in enumerate(trace.token_spans):
        average[i, start:end] = 1.0 / (end - start)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, n, n)

    def reduce(pattern, hook):  # keep [n, n] per head instead of the [T, T] pattern of all 30 layers
        out[int(hook.name.split(".")[1])] = torch.einsum("it,hts,js->hij", average, pattern[0].float(), average)

    model.run_with_hooks(trace.tokens(), fwd_hooks=[(lambda name: name.endswith("attn.hook_pattern"), reduce)])
    return out.numpy()


def receiver_analysis(sentence_attention: np.ndarray, k: int = 8) -> dict:
    """Vertical scores, kurtosis, top-k receiver heads and receiver scores as docs/methods.md 1.5 defines them."""
    layers, heads, n, _ = sentence_attention.shape
    later = np.tril(np.ones((n, n), dtype=bool), k=-PROXIMITY_IGNORE)  # i >= j + proximity_ignore
    counts = later.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vertical = np.where(later, sentence_attention, 0.0).sum(axis=2) / counts  # [layer, head, key j]
    vertical[..., counts == 0] = np.nan
    kurtosis = np.ma.filled(scipy.stats.kurtosis(vertical, axis=-1, fisher=True, bias=True, nan_policy="omit"), np.nan)
    kurtosis = np.asarray(kurtosis, dtype=float)
    kurtosis[0] = np.nan  # layer 0 excluded
    order = np.argsort(np.nan_to_num(kurtosis, nan=-np.inf), axis=None)[::-1][:k]
    top = [tuple(int(x) for x in np.unravel_index(index, kurtosis.shape)) for index in order]
    with warnings.catch_warnings():  # the last sentences have no vertical score (nothing 4 sentences later)
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = np.nanmean(np.stack([vertical[layer, head] for layer, head in top]), axis=0)
    return {
        "receiver_kurtosis": kurtosis,
        "receiver_heads": top,
        "head_attention": sentence_attention[top[0]],
        "receiver_scores": scores,
    }


def synthetic_matrices(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    distance = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    return {
        "suppression_kl": np.tril(rng.gamma(0.6, 0.05, (n, n)) * np.exp(-distance / 6), k=-1),
        "counterfactual_matrix": np.triu(rng.normal(0, 0.05, (n, n)) * np.exp(-distance / 10), k=1),
    }


@pytest.fixture(scope="module")
def case_graph():
    """A real attribution graph: a circuit-tracer comparison case (the graph equals circuit-tracer's)."""
    from anchorlens.attribution.attribute import attribution_graph
    from attribution_cases import CASES, case_model, case_transcoders

    case = CASES["tiny_llama_jumprelu_skip"]
    return attribution_graph(case_model(case), case_transcoders(case), case["prompt"], progress=False).prune()


@pytest.fixture(scope="module")
def real_data(smol, case_graph) -> ReportData:
    from anchorlens.flow.sentences import sentence_flow

    data = report_data_from_reference(SMALL, smol)
    receivers = receiver_analysis(smol_sentence_attention(smol, data.trace))
    receivers["flow_matrix"] = sentence_flow(smol, data.trace, distance="l2").matrix
    receivers["attribution_graph"] = case_graph
    notes = {
        "flow": "Computed here: information flow routes (L2) of SmolLM2-135M-Instruct on this published text.",
        "attribution": "Computed here: a seeded random 3-layer Llama with seeded JumpReLU transcoders on another "
                       "prompt (circuit-tracer's comparison case), not this trace.",
        "receiver": "Computed here: SmolLM2-135M-Instruct's attention on this published text (layer 0 excluded).",
        "head_attention": "Computed here from SmolLM2-135M-Instruct.",
        "suppression": SYNTHETIC,
        "counterfactual": SYNTHETIC,
        "graph": "Edges from the synthetic suppression and counterfactual matrices: layout only.",
    }
    return report_data_from_reference(SMALL, smol, notes=notes, **receivers, **synthetic_matrices(data.n_sentences, 0))


# ---------------------------------------------------------------------- tests


def test_full_report_renders_offline_with_hover_and_metric_switch(browser, real_data, case_graph, tmp_path):
    chunks = load_json(SMALL / "chunks_labeled.json")
    n = len(chunks)
    html = build_report(tmp_path, real_data, progress=False)
    opened = OpenedReport(browser, html)
    page = opened.page

    sections = opened.assert_every_section_drawn(min_colours=8)
    assert page.locator(".sentence").count() == n
    assert page.locator("#category-legend .item").count() == 9  # 8 categories + unlabelled
    assert page.locator('[data-section="graph"] circle.node').count() == n
    shown_edges = page.locator('[data-section="graph"] path.edge').count()
    assert 0 < shown_edges <= 2 * 24
    assert "L{}H{}".format(*real_data.receiver_heads[0]) in sections["receiver"]["text"]
    assert "Synthetic matrix" in page.inner_text("#heatmaps")

    # Hover the most important sentence: the tooltip shows its published numbers and label.
    values = [c["counterfactual_importance_kl"] for c in chunks]
    top, low = int(np.argmax(values)), int(np.argmin(values))
    page.hover(f'.sentence[data-i="{top}"]')
    tooltip = page.locator("#tooltip")
    assert tooltip.is_visible()
    text = tooltip.inner_text()
    assert f"Sentence {top}" in text and chunks[top]["function_tags"][0] in text
    for name in ("resampling_importance_accuracy", "forced_importance_kl", "receiver_score", "summary"):
        assert name in text
    selected = page.inner_text("#tooltip tr.sel td.v")
    assert float(selected) == pytest.approx(values[top], rel=1e-3), "the highlighted value is the published one"
    opened.screenshot(tmp_path / "tooltip.png", full_page=False)

    # Colour encodes the selected metric: the top sentence is far from white, the lowest almost white.
    far = sum(255 - c for c in opened.background(top))
    near = sum(255 - c for c in opened.background(low))
    assert far > 150 and near < 30, (far, near)

    before = [opened.background(i) for i in range(n)]
    page.select_option("#metric-select", "resampling_importance_accuracy")
    assert page.inner_text('[data-section="importance"] h3') == "Highest resampling_importance_accuracy"
    assert [opened.background(i) for i in range(n)] != before
    page.select_option("#colour-mode", "category")
    by_category: dict[str, set] = {}
    for i, chunk in enumerate(chunks):
        by_category.setdefault(chunk["function_tags"][0], set()).add(opened.background(i))
    assert all(len(shades) == 1 for shades in by_category.values()), "one colour per category"
    assert len(set.union(*by_category.values())) == len(by_category)
    page.select_option("#colour-mode", "metric")
    page.select_option("#metric-select", "counterfactual_importance_kl")

    # The attribution graph: every pruned node drawn, the logits above every other node, the embeddings below,
    # and hovering a feature names its layer, feature index and token.
    payload = json.loads(page.text_content("#report-data"))
    layout = payload["attribution"]
    kept = int(case_graph.node_mask.sum())
    drawn = page.locator('[data-section="attribution"] .anode')
    assert 0 < drawn.count() == len(layout["nodes"]) <= kept
    assert page.locator('[data-section="attribution"] .aedge').count() == len(layout["edges"]) > 10
    heights = page.eval_on_selector_all('[data-section="attribution"] .anode', """ns => ns.map(n => [
        n.getAttribute('class').split(' ')[1], n.getBoundingClientRect().top + n.getBoundingClientRect().height / 2])""")
    logits = [y for kind, y in heights if kind == "logit"]
    tokens = [y for kind, y in heights if kind == "token"]
    others = [y for kind, y in heights if kind in ("feature", "error")]
    assert logits and others and max(logits) < min(others) and max(others) < min(tokens)
    first_feature = next(i for i, n in enumerate(layout["nodes"]) if n["kind"] == "feature")
    node = layout["nodes"][first_feature]
    target = page.locator(f'[data-section="attribution"] .anode[data-n="{first_feature}"]')
    target.scroll_into_view_if_needed()
    target.hover(force=True)
    text = tooltip.inner_text()
    assert f"L{node['layer']} feature {node['feature']}" in text and json.dumps(node["token"]) in text, text
    assert page.locator('[data-section="attribution"] svg.dim').count() == 1, "its edges stand out"
    layer, position, feature = case_graph.active_features[case_graph.node_mask[: case_graph.n_features]][0].tolist()
    assert node["id"] == f"{layer}_{feature}_{position}", "the first feature drawn is the graph's first kept one"

    # Heatmap cells answer hovering too.
    canvas = page.locator('[data-section="head_attention"] canvas')
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    canvas.hover(position={"x": box["width"] * 0.4, "y": box["height"] * 0.6})  # a cell below the diagonal
    assert "mean attention" in tooltip.inner_text() and "query sentence #" in tooltip.inner_text()

    page.mouse.move(2, 600)
    opened.assert_offline_and_clean()
    shot = opened.screenshot(tmp_path / "report.png")
    assert shot.parent == html.parent
    _keep_for_humans(shot, "report-full.png")
    page.close()


def test_large_trace_stays_usable(browser, smol, tmp_path):
    data = report_data_from_reference(LARGE, smol, notes={"suppression": SYNTHETIC, "counterfactual": SYNTHETIC,
                                                          "graph": "Edges from synthetic matrices: layout only."})
    n = data.n_sentences
    assert n > 300
    rng = np.random.default_rng(1)
    kurtosis = rng.gamma(2.0, 2.0, (30, 9))
    data = report_data_from_reference(
        LARGE, smol, notes=data.notes | {"receiver": SYNTHETIC, "head_attention": SYNTHETIC},
        receiver_kurtosis=kurtosis, receiver_heads=[(5, 3), (12, 0)],
        head_attention=np.tril(rng.dirichlet(np.ones(n), n)), **synthetic_matrices(n, 2),
    )
    html = build_report(tmp_path, data, progress=False)
    opened = OpenedReport(browser, html)
    page = opened.page
    assert page.locator(".sentence").count() == n
    assert all(count > 8 for count in opened.canvas_colours().values())
    edges = page.locator('[data-section="graph"] path.edge')
    assert edges.count() == 80, "40 strongest edges per kind by default, not thousands"
    payload = json.loads(page.text_content("#report-data"))
    slider = '[data-section="graph"] input[type=range]'
    page.eval_on_selector(slider, "e => { e.value = e.max; e.dispatchEvent(new Event('input')); }")
    assert edges.count() == len(payload["graph"]["suppression"]) + len(payload["graph"]["counterfactual"])
    # The heatmaps fit their panels; the text scrolls inside its box instead of stretching the page.
    widths = page.eval_on_selector_all('[data-section] canvas', "cs => cs.map(c => c.getBoundingClientRect().width)")
    assert max(widths) <= 1200
    cot_height = page.eval_on_selector("#cot-text", "e => e.getBoundingClientRect().height")
    assert cot_height <= 900
    page.hover('.sentence[data-i="300"]')
    assert "Sentence 300" in page.inner_text("#tooltip")
    page.mouse.move(2, 600)
    opened.assert_offline_and_clean()
    _keep_for_humans(opened.screenshot(tmp_path / "report.png"), "report-large.png")
    page.close()


def test_missing_analyses_say_not_computed_and_text_stays_text(browser, smol, tmp_path):
    hostile = "We write </script><script>alert('x')</script> here. Then <b>bold</b> & <!-- nothing. Done."
    trace = Trace.from_text(smol, hostile)
    html = build_report(tmp_path, ReportData(trace, title="Bare </title> trace"), progress=False)
    opened = OpenedReport(browser, html)
    page = opened.page
    sections = opened.sections()
    for name in ("importance", "graph", "receiver", "head_attention", "suppression", "counterfactual", "flow",
                 "attribution"):
        assert sections[name]["notComputed"] == 1, f"section {name} must say it was not computed"
        assert "Not computed" in sections[name]["text"]
    assert page.locator(".sentence").count() == trace.n_sentences
    assert [page.inner_text(f'.sentence[data-i="{i}"]') for i in range(trace.n_sentences)] == trace.sentence_texts()
    assert page.title() == "Bare </title> trace"
    assert page.locator("#cot-text b").count() == 0, "sentence text is never parsed as HTML"
    page.hover('.sentence[data-i="0"]')
    assert "Sentence 0" in page.inner_text("#tooltip")
    opened.assert_offline_and_clean()
    _keep_for_humans(opened.screenshot(tmp_path / "report.png"), "report-bare.png")
    page.close()


def _keep_for_humans(shot: Path, name: str) -> None:
    """Also copy a screenshot to $ANCHORLENS_SCREENSHOTS (when set) for a person to look at."""
    target = os.environ.get("ANCHORLENS_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / name)


def test_the_main_commands_report_renders_every_section(browser, sample_analysis):
    """The page `anchorlens analyze` wrote on the embedded model (conftest.sample_analysis), as a user opens it."""
    n = len(json.loads((sample_analysis / "trace.json").read_text())["sentences"])
    opened = OpenedReport(browser, sample_analysis / "report.html")
    page = opened.page
    # 9 sentences: small heatmaps with few shades; the attribution graph needs transcoders (not given by default)
    opened.assert_every_section_drawn(min_colours=2, absent=frozenset({"attribution"}))
    assert page.locator(".sentence").count() == n
    assert page.locator('[data-section="graph"] circle.node').count() == n
    page.hover('.sentence[data-i="1"]')
    tooltip = page.inner_text("#tooltip")
    assert "Sentence 1" in tooltip and "resampling_importance_accuracy" in tooltip and "receiver_score" in tooltip
    page.mouse.move(2, 600)
    opened.assert_offline_and_clean()
    _keep_for_humans(opened.screenshot(sample_analysis / "report.png"), "report-analyze.png")
    page.close()


def test_study_page_in_the_browser_links_each_traces_report(browser, tmp_path, one_torch_thread):
    """The study page loads offline without errors, shows its figures, and each trace's link opens that trace's
    own report, which renders."""
    import anchorlens as al

    published = tmp_path / "published"
    names = ["incorrect_base_solution/problem_2189", "correct_base_solution/problem_6998"]
    for name in names:
        shutil.copytree(TRACES / name, published / name)
    model = al.random_model("llama", n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, seed=0)
    study = al.study(model, published, out_dir=tmp_path / "study", views=("receivers",), importance="published",
                     top_k=4, progress=False)
    page_path = study.write_page(tmp_path / "study")
    url = page_path.resolve().as_uri()
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.goto(url)
    page.wait_for_load_state("load")
    assert errors == [] and all(r == url or r.startswith("data:") for r in requests), (errors, requests)
    widths = page.evaluate("() => [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    assert widths and all(w > 100 for w in widths), f"figures not drawn: {widths}"
    assert f"{study.reliability:.2f}" in page.inner_text("body")
    for name in sorted(names):
        link = page.locator(f"a[href='traces/{name}/report.html']")
        assert link.count() == 1, f"no link to {name}'s report"
        link.click()
        page.wait_for_selector("body[data-rendered=true]", timeout=30_000)
        assert page.url == (tmp_path / "study" / "traces" / name / "report.html").resolve().as_uri()
        assert errors == [], errors
        page.go_back()
        page.wait_for_load_state("load")
    page.screenshot(path=str(tmp_path / "study" / "study.png.screenshot.png"), full_page=True)
    page.close()
