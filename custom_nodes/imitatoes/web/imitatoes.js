// The Imitatoes sidebar tab: start a self-improving loop on the graph that is open, watch its
// iterations arrive, stop, resume, open the report, save the spec. The loop itself is the
// `imitatoes` command, run by this pack's routes (/imitatoes/...) against this ComfyUI.
// Every text from a run (the critic's words included) goes into the page as text, never HTML.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const OLLAMA = "Imitatoes.OllamaURL";
const PARAMETERS = ["", "prompt", "negative", "seed", "cfg", "steps"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child == null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// How a run ended, in one line (text only: the page shows it as textContent).
function ended(run) {
  const memory = run.memory ? ` · memory: ${run.memory}` : "";
  return `${run.status}: best ${run.best ?? "-"} (score ${run.score ?? "-"})${memory}`;
}

async function call(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await api.fetchApi(`/imitatoes/${path}`, options);
  const data = await response.json().catch(() => ({ error: `${response.status}` }));
  if (!response.ok) throw new Error(data.error || `${response.status}`);
  return data;
}

function graphName() {
  const name = app.extensionManager?.workflow?.activeWorkflow?.filename || "graph";
  return name.replace(/\.json$/, "").replace(/[^A-Za-z0-9_-]+/g, "-").replace(/^[-_]+/, "")
    .slice(0, 64) || "graph";
}

class Tab {
  constructor(root) {
    this.root = root;
    this.cards = new Map();
    this.state = { run: null, name: null, budget: 0 };
    root.replaceChildren(this.build());
    this.refresh();
  }

  build() {
    this.problems = el("div", { class: "imitatoes-problems", style: "color:var(--error-text,#f66)" });
    this.goal = el("textarea", { rows: 2, placeholder: "What you want, in a sentence", style: "width:100%" });
    this.requirements = el("div");
    this.model = el("select", { style: "width:100%" });
    this.iterations = el("input", { type: "number", min: 1, max: 20, value: 3, style: "width:4em" });
    this.loops = el("input", { type: "number", min: 1, max: 10, value: 2, style: "width:4em" });
    this.bindings = el("div", { class: "imitatoes-bindings" });
    this.budget = el("progress", { max: 1, value: 0, style: "width:100%" });
    this.status = el("div", { class: "imitatoes-status" });
    this.list = el("div", { class: "imitatoes-cards" });
    this.instruction = el("input", { type: "text", placeholder: "Further instruction", style: "width:100%" });
    this.runList = el("select", { class: "imitatoes-runs", style: "width:100%", onchange: () => this.open(this.runList.value) });
    this.addRequirement("");
    return el("div", { style: "padding:8px;display:flex;flex-direction:column;gap:6px;height:100%;overflow-y:auto;box-sizing:border-box" },
      el("h3", {}, "Imitatoes"), this.problems,
      el("label", {}, "Goal"), this.goal,
      el("label", {}, "Requirements (each a yes/no statement)"), this.requirements,
      el("button", { onclick: () => this.addRequirement("") }, "+ requirement"),
      el("label", {}, "Critic (a vision model on Ollama)"), this.model,
      el("div", {}, "Iterations ", this.iterations, " loops ", this.loops),
      el("details", {}, el("summary", {}, "Bindings (what init chose)"), this.bindings),
      el("div", { style: "display:flex;gap:4px;flex-wrap:wrap" },
        el("button", { id: "imitatoes-start", onclick: () => this.start() }, "Start"),
        el("button", { id: "imitatoes-stop", onclick: () => this.stop() }, "Stop"),
        el("button", { id: "imitatoes-resume", onclick: () => this.resume() }, "Resume"),
        el("button", { id: "imitatoes-report", onclick: () => this.report() }, "Open report"),
        el("button", { id: "imitatoes-save", onclick: () => this.save() }, "Save spec")),
      this.instruction, el("label", {}, "Runs on this ComfyUI (from here or a terminal)"),
      this.runList, this.budget, this.status, this.list);
  }

  async listRuns() {
    try {
      const runs = await call("runs");
      const chosen = this.runList.value;
      this.runList.replaceChildren(el("option", { value: "" }, "(choose a run)"), ...runs.map((r) =>
        el("option", r.run === chosen ? { value: r.run, selected: "" } : { value: r.run },
          `${r.run} · ${r.status ?? "?"}${r.here ? "" : " · terminal"}`)));
      return runs;
    } catch (error) { return []; } // the list is a convenience: the next poll tries again
  }

  async open(run) {
    // a run the tab did not start (or an earlier one): its cards, read again while it goes
    if (!run) return;
    this.state = { run, name: null, budget: 0 };
    this.cards.clear();
    this.list.replaceChildren();
    const data = await call(`run?run=${encodeURIComponent(run)}`);
    this.budget.max = Math.max(1, (data.last_loop || 1) * 3);
    for (const card of data.cards) this.show({ name: null, run, card });
    this.say(ended(data));
  }

  addRequirement(text) {
    const input = el("input", { type: "text", value: text, class: "imitatoes-requirement", style: "width:100%" });
    this.requirements.append(input);
    return input;
  }

  say(text, bad = false) {
    (bad ? this.problems : this.status).textContent = text;
    if (!bad) this.problems.textContent = "";
  }

  async refresh() {
    const ollama = app.extensionManager.setting.get(OLLAMA);
    try {
      const status = await call(`status?ollama=${encodeURIComponent(ollama)}`);
      const troubles = [];
      if (!status.imitatoes.ok) troubles.push(status.imitatoes.problem);
      if (status.ollama && !status.ollama.ok) troubles.push(status.ollama.problem);
      this.problems.textContent = troubles.join("\n");
      const vision = (status.ollama?.models || []).filter((m) => m.vision);
      this.model.replaceChildren(...vision.map((m) => el("option", { value: m.name }, m.name)));
      if (status.imitatoes.ok) await this.propose(); // the bindings, shown before Start
    } catch (error) {
      this.say(`imitatoes: ${error.message}`, true);
    }
  }

  async graph() {
    const prompt = (await app.graphToPrompt()).output;
    if (!Object.values(prompt).some((n) => /Sampler/.test(n.class_type))) {
      throw new Error("this graph has no sampler: imitatoes needs one to bind seed, steps and cfg");
    }
    if (!Object.values(prompt).some((n) => n.class_type === "SaveImage" || n.class_type === "PreviewImage")) {
      throw new Error("this graph saves no image (add a Save Image node): the critic would see nothing");
    }
    return prompt;
  }

  async propose() {
    const prompt = await this.graph();
    const found = await call("propose", { prompt });
    this.proposed = found.spec;
    this.bindings.replaceChildren(...Object.entries(found.spec.bindings).map(([path, param]) => {
      const select = el("select", { "data-path": path },
        ...PARAMETERS.map((p) => el("option", p === param ? { value: p, selected: "" } : { value: p }, p || "(not bound)")));
      return el("div", {}, `${path} `, select);
    }));
    if (!this.goal.value.trim()) this.goal.value = found.spec.goal;
    const first = this.requirements.querySelector("input");
    if (first && !first.value.trim()) first.value = found.spec.requirements[0];
    return prompt;
  }

  chosenBindings() {
    const out = {};
    for (const select of this.bindings.querySelectorAll("select")) {
      if (select.value) out[select.dataset.path] = select.value;
    }
    return out;
  }

  async start() {
    try {
      this.say("reading the graph ...");
      const prompt = this.proposed ? await this.graph() : await this.propose();
      const name = graphName();
      const body = {
        name, prompt, goal: this.goal.value,
        requirements: [...this.requirements.querySelectorAll("input")].map((i) => i.value).filter((t) => t.trim()),
        model: this.model.value, ollama_url: app.extensionManager.setting.get(OLLAMA),
        iterations: Number(this.iterations.value), loops: Number(this.loops.value),
        bindings: this.chosenBindings(), start: { prompt: this.proposed.start.prompt },
        bounds: this.proposed.bounds || {},
      };
      // cleared before the call: the first iterations may arrive before its answer
      this.cards.clear();
      this.list.replaceChildren();
      this.state = { run: null, name, budget: body.iterations * body.loops };
      this.budget.max = this.state.budget;
      this.budget.value = 0;
      const started = await call("start", body);
      this.state.run = this.state.run || started.run;
      if (!/^(done|limits|interrupted|failed):/.test(this.status.textContent)) {
        this.say(`running: ${this.state.run || name}`);
      }
    } catch (error) {
      this.say(error.message, true);
    }
  }

  async stop() {
    try { await call("stop", { name: this.state.name || graphName() }); this.say("stopping (resumable) ..."); }
    catch (error) { this.say(error.message, true); }
  }

  async resume() {
    try {
      this.state.name = this.state.name || graphName();
      this.say(`resuming ${this.state.run} ...`);
      const data = await call("resume", { name: this.state.name, run: this.state.run, instruction: this.instruction.value });
      if (!/^(done|limits|interrupted|failed):/.test(this.status.textContent)) this.say(`resumed: ${data.run}`);
    } catch (error) { this.say(error.message, true); }
  }

  report() {
    if (this.state.run) window.open(api.apiURL(`/imitatoes/report?run=${encodeURIComponent(this.state.run)}`), "_blank");
  }

  async save() {
    try {
      const saved = await call("save", { name: this.state.name || graphName() });
      this.say(`saved ${saved.spec} and ${saved.workflow}`);
    } catch (error) { this.say(error.message, true); }
  }

  show(message) {
    if (message.name !== this.state.name) return; // another graph's loop
    if (message.run) this.state.run = message.run;
    if (message.ended) {
      this.say(ended(message.ended));
      return;
    }
    const card = message.card;
    if (!card) return;
    const image = el("img", { width: 72, height: 72, alt: card.key, style: "flex:none",
      src: api.apiURL(`/imitatoes/image?run=${encodeURIComponent(message.run)}&key=${encodeURIComponent(card.key)}`) });
    const checks = el("ul", { style: "margin:2px 0;padding-left:16px" }, ...card.checklist.map((c) =>
      el("li", { title: c.observation }, `${c.met ? "✓" : "✗"} ${c.requirement}`)));
    const node = el("div", { class: "imitatoes-card", "data-key": card.key, "data-score": card.score ?? -1,
      style: "border:1px solid var(--border-color,#444);padding:4px;display:flex;flex-wrap:wrap;gap:6px;font-size:12px" },
      el("b", { style: "flex:1 1 100%" }, `${card.key.replace("loop_", "").replace("_iter_", ".")} · ${card.done ? "done" : `score ${card.score ?? "-"}`}`),
      image, el("div", { style: "flex:1 1 100px;min-width:0;overflow-wrap:anywhere" },
        checks, el("div", { style: "opacity:.8" }, card.reason), el("div", {}, card.applied.join("; "))));
    const old = this.cards.get(card.key); // a record is written at the render, then judged
    if (old) old.replaceWith(node); else this.list.prepend(node);
    this.cards.set(card.key, node);
    this.budget.value = Math.min(this.budget.max, this.cards.size);
    this.markBest();
  }

  markBest() {
    // the best so far gets a green edge: the highest score, the earliest of equals
    const all = [...this.list.querySelectorAll(".imitatoes-card")].reverse();
    let best = null;
    for (const n of all) if (!best || Number(n.dataset.score) > Number(best.dataset.score)) best = n;
    for (const n of all) n.style.outline = n === best ? "2px solid #3c3" : "";
  }
}

app.registerExtension({
  name: "imitatoes.sidebar",
  settings: [{ id: OLLAMA, name: "Ollama URL for the Imitatoes critic", type: "text",
    defaultValue: "http://127.0.0.1:11434", category: ["Imitatoes", "Critic", "Ollama URL"] }],
  async setup() {
    let tab = null;
    api.addEventListener("imitatoes.iteration", (event) => tab?.show(event.detail));
    app.extensionManager.registerSidebarTab({
      id: "imitatoes", icon: "pi pi-sync", title: "Imitatoes",
      tooltip: "Imitatoes: render, critique, improve", type: "custom",
      render: (element) => { tab = new Tab(element); },
    });
    // runs started from a terminal appear in the list; one chosen there is read again
    setInterval(async () => {
      if (!tab) return;
      const runs = await tab.listRuns();
      const chosen = runs.find((r) => r.run === tab.state.run);
      if (tab.state.name === null && chosen?.status === "running") {
        await tab.open(chosen.run).catch(() => {});
      }
    }, 3000);
  },
});
