// A text document in the viewer: bring the marked passage into view (inline script is not allowed by the page's policy).
document.getElementById("passage")?.scrollIntoView({ block: "center" });
document.body.dataset.highlight = document.getElementById("status")?.dataset.highlight || "none";
