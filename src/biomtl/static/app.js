// The annotation page: POST /annotate {"text": ...} and show the one document that comes back.
"use strict";

const PALETTE = ["#ffd54f", "#81d4fa", "#a5d6a7", "#f48fb1", "#ce93d8", "#ffab91", "#b0bec5", "#e6ee9c", "#80cbc4"];
const colours = {};

function colour(type) {
  if (!(type in colours)) colours[type] = PALETTE[Object.keys(colours).length % PALETTE.length];
  return colours[type];
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

// Entities as nested marks. Sorted by start (longest first), an entity that starts inside another is drawn
// inside it, cut at its end when the two cross; data-start/data-end always give the entity's own span.
function entityTree(text, entities) {
  const root = { vstart: 0, vend: text.length, children: [] };
  const stack = [root];
  const sorted = [...entities].sort((a, b) => a.start - b.start || b.end - a.end);
  for (const e of sorted) {
    while (stack.length > 1 && e.start >= stack[stack.length - 1].vend) stack.pop();
    const parent = stack[stack.length - 1];
    const node = { entity: e, vstart: e.start, vend: Math.min(e.end, parent.vend), children: [] };
    parent.children.push(node);
    stack.push(node);
  }
  return root;
}

function draw(text, node, into) {
  let at = node.vstart;
  for (const child of node.children) {
    if (child.vstart > at) into.append(text.slice(at, child.vstart));
    const e = child.entity;
    const mark = el("mark", {
      class: "entity", "data-start": e.start, "data-end": e.end, "data-type": e.type,
      title: `${e.type} ${e.task || ""} ${e.score !== undefined ? e.score.toFixed(3) : ""}`.trim(),
    });
    mark.style.background = colour(e.type);
    draw(text, child, mark);
    mark.append(el("span", { class: "tag" }, e.type));
    into.append(mark);
    at = Math.max(at, child.vend);
  }
  if (node.vend > at) into.append(text.slice(at, node.vend));
}

function prob(p) {
  return p === undefined || p === null ? "" : Number(p).toFixed(3);
}

function show(doc) {
  const annotated = document.getElementById("annotated");
  annotated.replaceChildren();
  draw(doc.text, entityTree(doc.text, doc.entities), annotated);

  const legend = document.getElementById("legend");
  legend.replaceChildren();
  const types = [...new Set(doc.entities.map((e) => e.type))];
  for (const type of types) {
    const item = el("span", { class: "legend-item", "data-type": type }, type);
    item.style.background = colour(type);
    legend.append(item);
  }
  if (!types.length) legend.append(el("span", { class: "muted" }, "No entities found."));

  const byId = Object.fromEntries(doc.entities.map((e) => [e.id, e]));
  const body = document.querySelector("#relations tbody");
  body.replaceChildren();
  for (const r of doc.relations) {
    const row = el("tr", { class: "relation" });
    row.append(el("td", {}, r.type));
    for (const [role, id] of r.arguments) {
      const m = byId[id];
      row.append(el("td", {}, m ? `${role}: ${m.text} (${m.start}-${m.end})` : `${role}: ${id}`));
    }
    row.append(el("td", { class: "probability" }, prob(r.probability)));
    row.append(el("td", {}, r.task || r.source || ""));
    body.append(row);
  }
  document.getElementById("relations").hidden = !doc.relations.length;
  document.getElementById("no-relations").hidden = !!doc.relations.length;

  const labels = document.getElementById("labels");
  labels.replaceChildren();
  for (const [task, value] of Object.entries(doc.labels || {})) {
    const line = el("div", { class: "label-task", "data-task": task });
    line.append(el("b", {}, `${task}: `));
    const chosen = value.labels || (value.label !== undefined ? [value.label] : []);
    for (const label of chosen) {
      const p = value.probabilities ? value.probabilities[label] : value.probability;
      line.append(el("span", { class: "chip label" }, `${label} ${prob(p)}`.trim()));
    }
    if (!chosen.length) line.append(el("span", { class: "muted" }, "no label"));
    labels.append(line);
  }
  if (!Object.keys(doc.labels || {}).length) labels.append(el("span", { class: "muted" }, "The model has no document-level head."));
  document.getElementById("results").hidden = false;
}

async function annotate(event) {
  event.preventDefault();
  const status = document.getElementById("status");
  const error = document.getElementById("error");
  const button = document.getElementById("annotate");
  error.hidden = true;
  status.textContent = "annotating…";
  button.disabled = true;
  try {
    const response = await fetch("/annotate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: document.getElementById("text").value }),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    show(data.documents[0]);
    status.textContent = "done";
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    status.textContent = "";
  } finally {
    button.disabled = false;
  }
}

document.getElementById("form").addEventListener("submit", annotate);
