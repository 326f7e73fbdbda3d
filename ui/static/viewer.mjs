// The document viewer: a PDF page rendered by PDF.js, with the cited passage marked in its text layer.
//
// The passage's text comes from our parser (pypdf) and the page's text from PDF.js; they differ in
// spaces, line breaks, hyphenation and ligatures. Both are compared as letters and digits only
// (NFKC, lower case), so "compu-\ntation", "computation" and "ﬁle"/"file" meet; each kept character
// remembers the span and offset it came from, so the mark lands on the page's own words.
import * as pdfjsLib from "/pdfjs/pdf.min.mjs";

pdfjsLib.GlobalWorkerOptions.workerSrc = "/pdfjs/pdf.worker.min.mjs";
const KEEP = /[\p{L}\p{N}]/u;

function letters(text, onChar) {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    for (const x of text[i].normalize("NFKC").toLowerCase()) {
      if (KEEP.test(x)) { out += x; if (onChar) onChar(i); }
    }
  }
  return out;
}

// The longest prefix of `needle` found in `hay` (binary search: a prefix found means every shorter one is).
function longestPrefix(hay, needle) {
  let lo = 0, hi = needle.length, at = -1;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2), i = hay.indexOf(needle.slice(0, mid));
    if (i >= 0) { lo = mid; at = i; } else { hi = mid - 1; }
  }
  return lo > 0 ? [at >= 0 ? at : hay.indexOf(needle.slice(0, lo)), lo] : [-1, 0];
}

export function highlight(divs, passage) {
  const map = [];
  let page = "";
  divs.forEach((div, d) => { page += letters(div.textContent, (i) => map.push([d, i])); });
  const want = letters(passage);
  let [start, n] = [page.indexOf(want), want.length];
  if (start < 0) [start, n] = longestPrefix(page, want);
  if (start < 0 || n < Math.min(20, want.length)) return { found: "none", matched: 0, total: want.length };
  const spans = new Map();  // div -> [first, last] character offsets to mark
  const ends = new Map();  // div -> [first, last] offsets of all its letters
  for (const [d, i] of map) {
    const e = ends.get(d);
    ends.set(d, e ? [e[0], i] : [i, i]);
  }
  for (const [d, i] of map.slice(start, start + n)) {
    const r = spans.get(d);
    spans.set(d, r ? [r[0], i] : [i, i]);
  }
  let first = null;
  for (const [d, [a, b]] of spans) {
    const div = divs[d], text = div.textContent, [lo, hi] = ends.get(d);
    let marked = div;
    if (a === lo && b === hi) {
      // The whole span: mark the span itself, whose box PDF.js has fitted to the page's own glyphs.
      div.classList.add("passage-mark");
    } else {
      // Part of a span (the passage starts or ends inside it): a <mark> around those characters.
      marked = document.createElement("mark");
      marked.className = "passage-mark";
      marked.textContent = text.slice(a, b + 1);
      div.replaceChildren(text.slice(0, a), marked, text.slice(b + 1));
    }
    first = first || marked;
  }
  first.scrollIntoView({ block: "center" });
  return { found: n === want.length ? "whole" : "part", matched: n, total: want.length };
}

async function main() {
  const info = JSON.parse(document.getElementById("passage").textContent);
  const pdf = await pdfjsLib.getDocument({ url: info.url, isEvalSupported: false }).promise;
  const page = await pdf.getPage(info.page);
  const viewport = page.getViewport({ scale: 1.5 });
  const ratio = window.devicePixelRatio || 1;
  const canvas = document.getElementById("page-canvas");
  canvas.width = Math.floor(viewport.width * ratio);
  canvas.height = Math.floor(viewport.height * ratio);
  canvas.style.width = `${viewport.width}px`;
  canvas.style.height = `${viewport.height}px`;
  const box = document.getElementById("page-box");
  box.style.width = `${viewport.width}px`;
  box.style.height = `${viewport.height}px`;
  box.style.setProperty("--scale-factor", viewport.scale);
  await page.render({
    canvasContext: canvas.getContext("2d"), viewport,
    transform: ratio !== 1 ? [ratio, 0, 0, ratio, 0, 0] : null,
  }).promise;
  const layer = new pdfjsLib.TextLayer({
    textContentSource: page.streamTextContent(), container: document.getElementById("text-layer"), viewport,
  });
  await layer.render();
  const result = highlight(layer.textDivs, info.text);
  document.getElementById("status").textContent = {
    whole: "The cited passage is marked.",
    part: `The start of the cited passage is marked (${result.matched} of ${result.total} letters matched the page).`,
    none: "The cited passage could not be found on this page's text layer (a scanned page?); it is shown below.",
  }[result.found];
  document.body.dataset.highlight = result.found;
}

main().catch((e) => {
  document.getElementById("status").textContent = `The page could not be shown: ${e.message}`;
  document.body.dataset.highlight = "error";
});
