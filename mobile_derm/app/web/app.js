// The reference app: photo -> decode (EXIF orientation) -> downscale -> gate ->
// classifier -> abstention -> top-k -> malignancy vs operating points -> treatment
// scores. Everything about the model comes from app_config.json, which
// `mobile-derm web-app` writes from the model files' own metadata. No photo leaves the
// page: it is read from the file input and analysed here.
import {createGate, GATE_NOT_AVAILABLE} from './gate.js';
import {dequantize, explain, modelInput, readHeader, reductionFactor, resizeSquare, rgbaToRgb} from './pipeline.js';
import {AppError, fetchOk, loadRuntime, Model} from './runtime.js';

const $ = (id) => document.getElementById(id);
const CONFIG_URL = 'app_config.json';

const state = {config: null, classifier: null, gate: null, lastResult: null, ready: null};

// ------------------------------------------------------------------ messages

function setStatus(text) {
  $('status').textContent = text;
}

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
  $('result').hidden = true;
  document.body.dataset.state = 'error';
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

const megabytes = (n) => (n / 1e6).toFixed(1);
/** A probability as a percentage with one decimal, more where one would round it to 0% or
 * 100% (a threshold of 0.99986 is not "100.0%"). */
function percent(p) {
  let digits = 1;
  while (digits < 4 && p > 0 && p < 1 && ['0', '100'].includes(Number((100 * p).toFixed(digits)).toString())) {
    digits += 1;
  }
  return `${(100 * p).toFixed(digits)}%`;
}

// ------------------------------------------------------------------ loading

async function fetchConfig() {
  const response = await fetchOk(CONFIG_URL, (status) => `This site has no model description (${CONFIG_URL}: HTTP ${status}). ` +
                                                        'Build it with "mobile-derm web-app --models DIR --out SITE".');
  try {
    return await response.json();
  } catch {
    throw new AppError(`${CONFIG_URL} is not valid JSON; rebuild the site.`);
  }
}

async function load() {
  setStatus('Loading the app…');
  const config = await fetchConfig();
  state.config = config;
  $('notice').textContent = config.notice;
  setStatus('Loading the model runtime…');
  await loadRuntime(config.runtime.wasm_dir);
  const {classifier} = config;
  const progress = $('progress');
  const showProgress = (what) => (loaded, total) => {
    progress.hidden = false;
    progress.max = total || loaded;
    progress.value = loaded;
    setStatus(`Loading ${what}: ${megabytes(loaded)}${total ? ` of ${megabytes(total)}` : ''} MB`);
  };
  state.classifier = await Model.load(classifier.file, classifier.tensors, showProgress('the classifier'));
  state.gate = await createGate(config.gate, classifier.info.input_size, showProgress('the photo check'));
  progress.hidden = true;
  const card = $('model-card');
  card.href = classifier.model_card || '#';
  card.hidden = !classifier.model_card;
  $('model-name').textContent = `${classifier.info.name} ${classifier.info.version} (${classifier.file})`;
  for (const input of document.querySelectorAll('input[type=file]')) input.disabled = false;
  setStatus(state.gate.available ? 'Ready.' : 'Ready. (The photo-quality check is not available in this build.)');
  document.body.dataset.state = 'ready';
}

// ------------------------------------------------------------------ one photo

/** The photo's pixels, upright (EXIF orientation applied by the browser's decoder), as
 * RGB; JPEGs large enough are reduced as mobile_derm_quality.decode reduces them. */
async function decodePhoto(file) {
  const limits = state.config.decode;
  if (file.size === 0) throw new AppError(`${file.name} is empty.`);
  if (file.size > limits.max_file_bytes) {
    throw new AppError(`${file.name} is larger than ${limits.max_file_bytes / 2 ** 20} MiB; choose a smaller photo.`);
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  const header = readHeader(bytes);
  if (header.parsed && header.width * header.height > limits.max_pixels) {
    throw new AppError(`${file.name} is ${header.width}×${header.height} = ${(header.width * header.height).toLocaleString('en')} ` +
                       `pixels, more than the ${limits.max_pixels.toLocaleString('en')} this app analyses. ` +
                       'Take the photo at the camera\'s normal resolution.');
  }
  const factor = header.format === 'jpeg' && header.parsed
    ? reductionFactor(header.width, header.height, limits.min_long_side) : 1;
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes]), {
      imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none',
    });
  } catch {
    if (header.format === 'heif' || header.format === 'avif') {
      throw new AppError(`This browser cannot decode ${file.name} (${header.format.toUpperCase()}). ` +
                         'Share the photo as JPEG (on an iPhone: Settings → Camera → Formats → Most Compatible).');
    }
    throw new AppError(`${file.name} is not a photo this browser can read ` +
                       `(${header.format === 'other' ? 'not an image' : `damaged ${header.format.toUpperCase()}`}).`);
  }
  // the browser has no reduced JPEG decode: draw at the reduced size instead
  const width = Math.ceil(bitmap.width / factor), height = Math.ceil(bitmap.height / factor);
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.imageSmoothingQuality = 'high';
  context.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  const rgba = context.getImageData(0, 0, width, height).data;
  let transparent = false;
  for (let i = 3; i < rgba.length && !transparent; i += 4) transparent = rgba[i] < 255;
  return {rgb: rgbaToRgb(rgba, limits.transparency_background), width, height, canvas, transparent};
}

async function classify(rgb, width, height) {
  const {info, tensors} = state.config.classifier;
  const pixels = resizeSquare(rgb, width, height, info.input_size);
  const started = performance.now();
  const raw = await state.classifier.run(modelInput(pixels, info.mean, info.std, tensors.input));
  const inferenceMs = performance.now() - started;
  const probs = dequantize(raw.probabilities, tensors.outputs.probabilities);
  const unfamiliarity = raw.unfamiliarity ? dequantize(raw.unfamiliarity, tensors.outputs.unfamiliarity)[0] : null;
  return {explained: explain(probs, unfamiliarity, state.config.classifier, state.config.top_k), inferenceMs};
}

/** Analyse one photo file; the result has the keys of `mobile-derm predict`'s output
 * (quality, classified, prediction, abstained, top_k, ...) plus timings. */
async function analyse(file) {
  document.body.dataset.state = 'busy'; // before any await: a caller that set the file waits for the change
  try {
    await state.ready;
    clearError();
    setStatus(`Analysing ${file.name}…`);
    const decoded = await decodePhoto(file);
    const gateStarted = performance.now();
    const quality = await state.gate.assess(decoded);
    const result = {image: file.name, gate: state.gate.available ? state.config.gate.file : GATE_NOT_AVAILABLE,
                    analysed_size: [decoded.width, decoded.height]};
    if (state.gate.available) Object.assign(result, {quality, gate_ms: performance.now() - gateStarted});
    result.classified = quality.decision !== 'reject';
    if (result.classified) {
      const {explained, inferenceMs} = await classify(decoded.rgb, decoded.width, decoded.height);
      Object.assign(result, explained, {inference_ms: inferenceMs});
    }
    state.lastResult = result;
    render(result, decoded.canvas);
    setStatus('Done.');
    document.body.dataset.state = 'result';
    return result;
  } catch (error) {
    const message = error instanceof AppError ? error.message : `Something went wrong: ${error.message}`;
    state.lastResult = {image: file.name, error: message};
    showError(message);
    setStatus('');
    return state.lastResult;
  }
}

// ------------------------------------------------------------------ rendering

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function renderQuality(result, into) {
  const section = element('section');
  section.append(element('h2', 'Photo check'));
  if (result.gate === GATE_NOT_AVAILABLE) {
    section.append(element('p', 'Not available in this build: the photo was not checked for sharpness, light or ' +
                                'framing. Judge it yourself: sharp, well lit, the spot in the centre.', 'muted'));
  } else {
    const {decision, reasons, guidance} = result.quality;
    section.append(element('p', {accept: 'Good photo.', warn: 'Usable, but could be better.',
                                 reject: 'This photo cannot be analysed.'}[decision], `verdict ${decision}`));
    if (reasons.length) section.append(element('p', `Reasons: ${reasons.join(', ')}`));
    if (guidance.length) {
      const list = element('ul');
      guidance.forEach((g) => list.append(element('li', g)));
      section.append(element('p', 'What to do:'), list);
    }
  }
  into.append(section);
}

const ABSTAIN_WORDS = {
  low_confidence: (info) => `no class is likely enough (the most likely is below ${percent(info.ood_threshold)})`,
  unfamiliar: () => 'the photo is unlike the photos the model learned from',
};

function renderClassification(result, into) {
  const info = state.config.classifier.info;
  const section = element('section');
  section.append(element('h2', 'Result'));
  if (result.abstained) {
    section.append(element('p', 'Unknown: the model cannot say what this is.', 'verdict unknown'));
    const reasons = result.abstain_reasons.map((r) => (ABSTAIN_WORDS[r] ? ABSTAIN_WORDS[r](info) : r));
    section.append(element('p', `Why: ${reasons.join('; ')}.`));
  }
  const table = element('table');
  table.append(element('caption', result.abstained ? 'Closest classes (not a result)' : 'Most likely'));
  const head = element('tr');
  head.append(element('th', 'Condition'), element('th', 'Probability'));
  table.append(head);
  for (const row of result.top_k) {
    const tr = element('tr');
    tr.append(element('td', row.display_name), element('td', percent(row.probability)));
    table.append(tr);
  }
  section.append(table);
  into.append(section);

  const malignancy = element('section');
  malignancy.append(element('h2', 'Malignancy'));
  malignancy.append(element('p', `Score: ${percent(result.malignancy.score)} (sum of the malignant classes)`));
  const points = element('ul');
  for (const [name, point] of Object.entries(result.malignancy.operating_points)) {
    points.append(element('li', `${name} operating point (${percent(point.threshold)}): ` +
                                (point.refer ? 'refer to a doctor' : 'no referral at this point'),
                          point.refer ? 'refer' : ''));
  }
  malignancy.append(points);
  into.append(malignancy);

  const names = Object.keys(result.treatment_scores);
  if (names.length) {
    const treatments = element('section');
    treatments.append(element('h2', 'Treatment options'));
    const list = element('ul');
    names.forEach((name) => list.append(element('li', `${name.replaceAll('_', ' ')}: ${percent(result.treatment_scores[name])}`)));
    treatments.append(element('p', 'How likely each kind of treatment is, summed over the classes it applies to:'), list);
    into.append(treatments);
  }
}

/** The analysed photo, small, drawn from the decoded pixels (no URL: nothing to fetch). */
function preview(canvas) {
  const scale = Math.min(1, 240 / canvas.width, 180 / canvas.height);
  const shown = element('canvas', undefined, 'preview');
  shown.width = Math.max(1, Math.round(canvas.width * scale));
  shown.height = Math.max(1, Math.round(canvas.height * scale));
  shown.setAttribute('role', 'img');
  shown.setAttribute('aria-label', 'The photo analysed');
  shown.getContext('2d').drawImage(canvas, 0, 0, shown.width, shown.height);
  return shown;
}

function render(result, canvas) {
  const box = $('result');
  box.replaceChildren();
  box.append(element('p', state.config.notice, 'notice'), preview(canvas));
  renderQuality(result, box);
  if (result.classified) renderClassification(result, box);
  else box.append(element('p', 'Not classified: retake the photo as the check says.', 'verdict reject'));
  box.hidden = false;
  box.focus();
}

// ------------------------------------------------------------------ wiring

function start() {
  for (const input of document.querySelectorAll('input[type=file]')) {
    input.disabled = true;
    input.addEventListener('change', () => {
      if (input.files.length) analyse(input.files[0]);
      input.value = '';
    });
  }
  state.ready = load().catch((error) => {
    $('progress').hidden = true;
    showError(error instanceof AppError ? error.message : `The app could not start: ${error.message}`);
    setStatus('');
    throw error;
  });
  // for tests and the agreement command: the same analysis the buttons run
  window.mobileDerm = {ready: state.ready, analyse, get lastResult() { return state.lastResult; }};
}

start();
