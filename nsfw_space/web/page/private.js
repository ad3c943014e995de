// The "On this device" checker: the image is read by this page (file input, drop, paste, webcam) and
// scored by transformers.js in WASM. Nothing the visitor picks is sent anywhere: the only requests
// are for status.json, the runtime's files and the model's files, all from the server this page
// came from. Hooks for scripts and tests: #private-input, and #private-result's data-scores.

const $ = (id) => document.getElementById(id);
const DIGITS = 1e6; // the Space's rounding rule: scores and thresholds compared to 6 digits
const reported = (value) => Math.round(value * DIGITS) / DIGITS;
const here = (path) => new URL(path, document.baseURI).href;

const state = { status: null, model: null, processor: null, labels: [], pending: null, busy: false, stream: null };

function say(text) {
  $("private-status").textContent = text;
}

function megabytes(bytes) {
  return bytes ? `${(bytes / 1e6).toFixed(1)} MB` : "a few MB";
}

async function readStatus() {
  const response = await fetch(here("status.json"), { cache: "no-store" });
  if (!response.ok) throw new Error(`status.json answered ${response.status}`);
  return response.json();
}

async function boot() {
  let status;
  try {
    status = await readStatus();
  } catch (err) {
    say(`The on-device model cannot be reached (${err.message}).`);
    return;
  }
  state.status = status;
  setThreshold(status.threshold ?? 0.5);
  if (status.state === "refused") {
    say(`The on-device model is not available on this Space: ${status.reason}. The other tabs check images on the server.`);
    document.body.dataset.state = "refused";
    return;
  }
  if (status.state !== "ready") {
    say("The on-device model is being prepared on the server (a few minutes, once per model); this view will start by itself.");
    document.body.dataset.state = status.state;
    setTimeout(boot, 5000);
    return;
  }
  const download = (status.model_bytes || 0) + (status.runtime_bytes || 0);
  say(`Loading the model into this page (${megabytes(download)} the first time, from this Space; kept by the browser afterwards)...`);
  document.body.dataset.state = "loading";
  const started = performance.now();
  try {
    await loadModel(status);
  } catch (err) {
    say(`The model could not start in this browser: ${err.message}`);
    document.body.dataset.state = "failed";
    return;
  }
  const loadMs = performance.now() - started;
  document.body.dataset.state = "ready";
  document.body.dataset.loadMs = String(Math.round(loadMs));
  say(
    `Ready: images are checked in this page and stay on this device (a one-time download of ${megabytes(download)}; loaded in ${(loadMs / 1000).toFixed(1)} s).`
  );
  if (state.pending) {
    const pending = state.pending;
    state.pending = null;
    await check(pending);
  }
}

async function loadModel(status) {
  const tf = await import(here("runtime/transformers.min.js"));
  tf.env.allowRemoteModels = false; // never the Hub, never a CDN
  tf.env.allowLocalModels = true;
  tf.env.localModelPath = here("model/");
  const wasm = tf.env.backends.onnx.wasm;
  wasm.wasmPaths = {
    mjs: here("runtime/ort-wasm-simd-threaded.asyncify.mjs"),
    wasm: here("runtime/ort-wasm-simd-threaded.asyncify.wasm"),
  };
  const cores = navigator.hardwareConcurrency || 1;
  wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(4, cores)) : 1;
  state.threads = wasm.numThreads;
  state.tf = tf;
  state.processor = await tf.AutoProcessor.from_pretrained(status.model_id);
  state.model = await tf.AutoModelForImageClassification.from_pretrained(status.model_id, { dtype: "q8", device: "wasm" });
  const id2label = state.model.config.id2label;
  state.labels = Object.keys(id2label)
    .sort((a, b) => Number(a) - Number(b))
    .map((key) => id2label[key]);
  const isolation = self.crossOriginIsolated
    ? `${state.threads} threads (cross-origin isolated)`
    : "1 thread (this page is not cross-origin isolated, so WASM runs single-threaded)";
  $("private-backend").textContent = `Runs in this browser: WASM, 8-bit weights, ${isolation}; transformers.js ${tf.env.version}.`;
}

function inputSize() {
  const size = state.processor?.image_processor?.size ?? state.processor?.size ?? {};
  return [size.width ?? size.shortest_edge ?? 224, size.height ?? size.shortest_edge ?? 224];
}

async function decode(blob) {
  try {
    return await createImageBitmap(blob);
  } catch {
    return null;
  }
}

async function check(source) {
  if (!state.model) {
    state.pending = source;
    showMessage("The model is still loading; the image will be checked as soon as it is ready.");
    return;
  }
  if (state.busy) {
    state.pending = source;
    return;
  }
  state.busy = true;
  const result = $("private-result");
  delete result.dataset.scores;
  result.dataset.state = "checking";
  showMessage("");
  try {
    const bitmap = source instanceof ImageBitmap ? source : await decode(source);
    if (!bitmap) {
      result.dataset.state = "error";
      clearResult();
      showMessage(
        "This file is not an image this browser can read (try a JPEG, PNG, GIF, WebP or AVIF). Nothing was sent anywhere."
      );
      return;
    }
    const started = performance.now();
    const [width, height] = inputSize();
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext("2d");
    context.fillStyle = "#ffffff"; // transparency on white, as the server does
    context.fillRect(0, 0, width, height);
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(bitmap, 0, 0, width, height);
    const image = state.tf.RawImage.fromCanvas(canvas).rgb();
    const inputs = await state.processor(image);
    const { logits } = await state.model(inputs);
    const scores = softmax(Array.from(logits.data), state.labels);
    const ms = performance.now() - started;
    showResult(scores, bitmap, ms);
  } catch (err) {
    result.dataset.state = "error";
    showMessage(`The check failed in this browser: ${err.message}`);
  } finally {
    state.busy = false;
    if (state.pending) {
      const next = state.pending;
      state.pending = null;
      check(next);
    }
  }
}

function softmax(logits, labels) {
  const top = Math.max(...logits);
  const exps = logits.map((value) => Math.exp(value - top));
  const total = exps.reduce((a, b) => a + b, 0);
  const scores = {};
  labels.forEach((label, i) => {
    scores[label] = exps[i] / total;
  });
  return scores;
}

function nsfwScore(scores) {
  const names = state.status?.nsfw_labels?.length ? state.status.nsfw_labels : ["nsfw"];
  return names.reduce((sum, name) => sum + (scores[name] ?? 0), 0);
}

function decision(score) {
  const block = reported(Number($("private-threshold").value));
  const review = Math.min(block, reported(state.status?.review_threshold ?? block));
  const value = reported(score);
  if (value >= block) return "block";
  return value >= review ? "review" : "allow";
}

const VERDICT_TEXT = { block: "Flagged as NSFW", review: "Needs a human review", allow: "Looks safe" };

function showResult(scores, bitmap, ms) {
  const result = $("private-result");
  state.last = { scores, bitmap };
  const rounded = Object.fromEntries(Object.entries(scores).map(([label, value]) => [label, reported(value)]));
  result.dataset.scores = JSON.stringify(rounded);
  result.dataset.ms = String(Math.round(ms));
  result.dataset.state = "done";
  const bars = $("private-bars");
  bars.replaceChildren(
    ...Object.entries(rounded)
      .sort((a, b) => b[1] - a[1])
      .map(([label, value]) => bar(label, value))
  );
  drawPreview(bitmap);
  showVerdict();
  $("private-backend").dataset.ms = String(Math.round(ms));
}

function bar(label, value) {
  const row = document.createElement("div");
  row.className = "bar";
  const name = document.createElement("div");
  name.className = "name";
  const left = document.createElement("span");
  left.textContent = label;
  const right = document.createElement("span");
  right.textContent = `${(value * 100).toFixed(1)}%`;
  name.append(left, right);
  const track = document.createElement("div");
  track.className = "track";
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = `${(value * 100).toFixed(2)}%`;
  track.append(fill);
  row.append(name, track);
  return row;
}

function showVerdict() {
  if (!state.last) return;
  const score = nsfwScore(state.last.scores);
  const verdict = decision(score);
  const element = $("private-verdict");
  element.className = verdict;
  element.textContent = `${VERDICT_TEXT[verdict]} (nsfw score ${reported(score).toFixed(3)})`;
  $("private-result").dataset.decision = verdict;
  const preview = $("private-preview");
  const hide = verdict !== "allow"; // a flagged image is never shown unblurred unless asked
  preview.classList.toggle("blurred", hide);
  $("private-reveal").hidden = !hide;
}

function drawPreview(bitmap) {
  const preview = $("private-preview");
  const scale = Math.min(1, 288 / Math.max(bitmap.width, bitmap.height));
  preview.width = Math.max(1, Math.round(bitmap.width * scale));
  preview.height = Math.max(1, Math.round(bitmap.height * scale));
  preview.classList.add("blurred"); // blurred until the verdict says otherwise
  preview.getContext("2d").drawImage(bitmap, 0, 0, preview.width, preview.height);
  preview.hidden = false;
}

function clearResult() {
  $("private-bars").replaceChildren();
  $("private-verdict").textContent = "";
  $("private-preview").hidden = true;
  $("private-reveal").hidden = true;
  state.last = null;
}

function showMessage(text) {
  $("private-message").textContent = text;
}

function setThreshold(value) {
  const slider = $("private-threshold");
  slider.value = String(value);
  $("private-threshold-value").textContent = Number(value).toFixed(2);
}

function firstImage(items) {
  for (const item of items ?? []) {
    const file = item instanceof File ? item : item.getAsFile?.();
    if (file) return file;
  }
  return null;
}

async function startCamera() {
  const video = $("private-video");
  if (state.stream) {
    state.stream.getTracks().forEach((track) => track.stop());
    state.stream = null;
    video.hidden = true;
    $("private-capture").hidden = true;
    $("private-camera").textContent = "Use the webcam on this device";
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (err) {
    showMessage(`The webcam could not be opened (${err.message}).`);
    return;
  }
  video.srcObject = state.stream;
  video.hidden = false;
  await video.play();
  $("private-capture").hidden = false;
  $("private-camera").textContent = "Stop the webcam";
}

async function captureFrame() {
  const video = $("private-video");
  if (!video.videoWidth) return;
  check(await createImageBitmap(video));
}

function wire() {
  const input = $("private-input");
  input.addEventListener("change", () => {
    if (input.files?.length) check(input.files[0]);
    input.value = ""; // the same file again is checked again
  });
  const drop = $("private-drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = firstImage(event.dataTransfer?.files);
    if (file) check(file);
  });
  document.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData?.items);
    if (file) check(file);
  });
  $("private-camera").addEventListener("click", startCamera);
  $("private-capture").addEventListener("click", captureFrame);
  $("private-reveal").addEventListener("click", () => {
    $("private-preview").classList.remove("blurred");
    $("private-reveal").hidden = true;
  });
  $("private-threshold").addEventListener("input", (event) => {
    $("private-threshold-value").textContent = Number(event.target.value).toFixed(2);
    showVerdict();
  });
}

wire();
boot();
