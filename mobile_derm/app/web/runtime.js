// LiteRT.js (@litertjs/core, pinned in package.json): load the Wasm runtime from this
// site, fetch a .tflite with progress, run one image. Nothing here knows our metadata.
import {loadAndCompile, loadLiteRt, Tensor} from '@litertjs/core';

const TFLITE_IDENTIFIER = 'TFL3'; // bytes 4..8 of every TFLite flatbuffer

export class AppError extends Error {} // a message for the person, shown on the page

let runtimeLoaded = null;

/** Load the single-threaded Wasm build from `wasmDir` (a folder of this site): the
 * threaded one needs cross-origin isolation headers that a plain static host lacks. */
export function loadRuntime(wasmDir) {
  runtimeLoaded ??= loadLiteRt(wasmDir).catch((error) => {
    runtimeLoaded = null;
    throw new AppError(`The model runtime (LiteRT.js) could not start in this browser: ${error.message}`);
  });
  return runtimeLoaded;
}

/** The response for `url`, or an AppError: a network failure says so, and a status that is
 * not OK gets the message `missing(status)` makes. */
export async function fetchOk(url, missing) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new AppError(`${url} could not be loaded (${error.message}).`);
  }
  if (!response.ok) throw new AppError(missing(response.status));
  return response;
}

/** The bytes at `url`, reporting (loaded, total) as they arrive. */
export async function fetchBytes(url, onProgress) {
  const response = await fetchOk(url, (status) => `${url} is missing from this site (HTTP ${status}). ` +
                                                  'Rebuild the site with "mobile-derm web-app --models DIR --out SITE".');
  const total = Number(response.headers.get('content-length')) || 0;
  const reader = response.body.getReader();
  const parts = [];
  let loaded = 0;
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    parts.push(value);
    loaded += value.length;
    onProgress?.(loaded, total);
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const part of parts) { bytes.set(part, at); at += part.length; }
  return bytes;
}

/** The .tflite at `url`, compiled for the CPU (Wasm). */
export async function compileTflite(url, onProgress) {
  const bytes = await fetchBytes(url, onProgress);
  if (bytes.length < 8 || String.fromCharCode(...bytes.subarray(4, 8)) !== TFLITE_IDENTIFIER) {
    throw new AppError(`${url} is not a TFLite model (the file is damaged or something else).`);
  }
  try {
    return await loadAndCompile(bytes, {accelerator: 'wasm'});
  } catch (error) {
    throw new AppError(`${url} could not be loaded by LiteRT.js (${error.message}).`);
  }
}

/** One compiled .tflite. `tensors` (from the site's app_config.json) names the input and
 * the outputs wanted, with their types. */
export class Model {
  static async load(url, tensors, onProgress) {
    return new Model(url, await compileTflite(url, onProgress), tensors);
  }

  constructor(url, compiled, tensors) {
    this.url = url;
    this.compiled = compiled;
    this.tensors = tensors;
    const [input] = compiled.getInputDetails();
    const shape = Array.from(input.shape);
    if (input.dtype !== tensors.input.dtype || shape.length !== tensors.input.shape.length ||
        shape.slice(1).some((n, i) => n !== tensors.input.shape[i + 1])) {
      throw new AppError(`${url} takes ${input.dtype}[${shape}], not the ` +
                         `${tensors.input.dtype}[${tensors.input.shape}] its description says.`);
    }
    const names = compiled.getOutputDetails().map((d) => d.name);
    for (const output of Object.values(tensors.outputs)) {
      if (output && !names.includes(output.name)) {
        throw new AppError(`${url} has no output named ${output.name} (it has ${names.join(', ')}).`);
      }
    }
    this.outputNames = names;
  }

  /** Run on one input (a typed array of the input's type, batch of one); returns
   * {role: typed array} for each output role in `tensors.outputs`. */
  async run(data) {
    const input = new Tensor(data, this.tensors.input.shape);
    let outputs;
    try {
      const signature = this.compiled.defaultSignature;
      if (this.compiled.getInputDetails()[0].shape[0] === -1) {
        // Keras writes the batch axis as -1 in the signature; LiteRT.js 2.5 refuses any
        // buffer against a -1 (its check compares shapes literally) though the runtime
        // itself runs a batch of one, as every other LiteRT does: call it directly.
        const buffers = await signature.liteRtCompiledModel.run(signature.signatureIndex, [input.liteRtTensorBuffer]);
        outputs = buffers.map((buffer) => new Tensor(buffer));
      } else {
        outputs = await this.compiled.run([input]);
      }
    } finally {
      input.delete();
    }
    const byRole = {};
    for (const [role, output] of Object.entries(this.tensors.outputs)) {
      if (!output) continue;
      byRole[role] = outputs[this.outputNames.indexOf(output.name)].toTypedArray().slice();
    }
    outputs.forEach((tensor) => tensor.delete());
    return byRole;
  }
}
