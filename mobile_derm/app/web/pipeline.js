// The app's arithmetic, with no browser API: photo header -> limits, pixels -> model
// input, model outputs -> the decision-support result. Each function mirrors one
// Python function of mobile_derm (named beside it) so the page agrees with
// `mobile-derm predict`; tests run this file in Node against the Python originals.
//
// Float32 arithmetic is emulated with Math.fround where the Python side computes in
// float32 (NumPy keeps float32 when a Python number meets a float32 array).

const f32 = Math.fround;

// ------------------------------------------------------------------ photo header
// mobile_derm_quality.decode.sniff_format / read_header (JPEG, PNG, WebP): the size a
// photo announces, read before any pixel is decoded, so a decompression bomb is refused.

export function sniffFormat(b) {
  const ascii = (from, to) => String.fromCharCode(...b.subarray(from, to));
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b[0] === 0x89 && ascii(1, 4) === 'PNG') return 'png';
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
  if (ascii(4, 8) === 'ftyp') {
    const brand = ascii(8, 12);
    if (brand === 'avif') return 'avif';
    if (['heic', 'heix', 'hevc', 'hevx', 'heim', 'heis', 'mif1', 'msf1'].includes(brand)) return 'heif';
  }
  if (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a') return 'gif';
  if (ascii(0, 2) === 'BM') return 'bmp';
  if (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*') return 'tiff';
  return 'other';
}

const JPEG_FRAME_MARKERS = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

function jpegSize(b) {
  let i = 2;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) { i += 1; continue; }
    const marker = b[i + 1];
    if (marker === 0xff) { i += 1; continue; }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { i += 2; continue; }
    const length = (b[i + 2] << 8) | b[i + 3];
    if (JPEG_FRAME_MARKERS.has(marker)) {
      if (i + 10 > b.length) return null;
      return {height: (b[i + 5] << 8) | b[i + 6], width: (b[i + 7] << 8) | b[i + 8]};
    }
    if (marker === 0xda || length < 2) return null;
    i += 2 + length;
  }
  return null;
}

function pngSize(b) {
  if (b.length < 26 || String.fromCharCode(...b.subarray(12, 16)) !== 'IHDR') return null;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {width: view.getUint32(16), height: view.getUint32(20)};
}

function webpSize(b) {
  const chunk = String.fromCharCode(...b.subarray(12, 16));
  if (chunk === 'VP8X' && b.length >= 30) {
    return {width: 1 + (b[24] | (b[25] << 8) | (b[26] << 16)), height: 1 + (b[27] | (b[28] << 8) | (b[29] << 16))};
  }
  if (chunk === 'VP8 ' && b.length >= 30) {
    return {width: (b[26] | (b[27] << 8)) & 0x3fff, height: (b[28] | (b[29] << 8)) & 0x3fff};
  }
  if (chunk === 'VP8L' && b.length >= 25) {
    const [b0, b1, b2, b3] = b.subarray(21, 25);
    return {width: 1 + (((b1 & 0x3f) << 8) | b0), height: 1 + (((b3 & 0x0f) << 10) | (b2 << 2) | ((b1 & 0xc0) >> 6))};
  }
  return null;
}

/** {format, width, height} from the header; width/height null when the format's header
 * is not one this file reads (the browser's decoder then has the last word). */
export function readHeader(bytes) {
  const format = sniffFormat(bytes);
  const parse = {jpeg: jpegSize, png: pngSize, webp: webpSize}[format];
  const size = parse ? parse(bytes) : null;
  return {format, width: size ? size.width : null, height: size ? size.height : null, parsed: Boolean(size)};
}

/** mobile_derm_quality.decode._reduction: JPEGs are decoded at 1/2, 1/4 or 1/8 size as
 * long as the longer side keeps min_long_side pixels. */
export function reductionFactor(width, height, minLongSide) {
  const longSide = Math.max(width, height);
  for (const factor of [8, 4, 2]) {
    if (Math.floor(longSide / factor) >= minLongSide) return factor;
  }
  return 1;
}

// ------------------------------------------------------------------ pixels

/** RGBA (canvas ImageData) -> RGB over the neutral grey background, as
 * mobile_derm_quality.decode._composite does (float32, +0.5, truncated). Opaque
 * pixels come through unchanged. */
export function rgbaToRgb(rgba, background) {
  const n = rgba.length / 4;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = rgba[4 * i + 3];
    if (a === 255) {
      rgb[3 * i] = rgba[4 * i]; rgb[3 * i + 1] = rgba[4 * i + 1]; rgb[3 * i + 2] = rgba[4 * i + 2];
      continue;
    }
    const alpha = f32(a / 255);
    const rest = f32(background * f32(1 - alpha));
    for (let c = 0; c < 3; c++) {
      const v = f32(f32(f32(rgba[4 * i + c] * alpha) + rest) + 0.5);
      rgb[3 * i + c] = Math.min(255, Math.max(0, Math.trunc(v)));
    }
  }
  return rgb;
}

/** mobile_derm.app.preprocess.square_box: (top, left, side) of the centred square. */
export function squareBox(h, w) {
  const side = Math.min(h, w);
  return {top: Math.floor((h - side) / 2), left: Math.floor((w - side) / 2), side};
}

function roundHalfEven(x) {
  const r = Math.round(x);
  return (Math.abs(x % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
}

const saturate8 = (v) => Math.min(255, Math.max(0, roundHalfEven(v)));

/** OpenCV's INTER_AREA weights along one axis (computeResizeAreaTab). */
function areaTable(ssize, dsize, scale) {
  const tab = [];
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale;
    const fsx2 = fsx1 + scale;
    const cellWidth = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1);
    let sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) tab.push([dx, sx1 - 1, f32((sx1 - fsx1) / cellWidth)]);
    for (let sx = sx1; sx < sx2; sx++) tab.push([dx, sx, f32(1.0 / cellWidth)]);
    if (fsx2 - sx2 > 1e-3) tab.push([dx, sx2, f32(Math.min(Math.min(fsx2 - sx2, 1), cellWidth) / cellWidth)]);
  }
  return tab;
}

/** cv2.resize(..., INTER_AREA) when shrinking: the (sw x sh) region at (top, left) of an
 * RGB image `width` wide, to dw x dh. */
function resizeArea(rgb, width, top, left, sw, sh, dw, dh) {
  const out = new Uint8Array(dw * dh * 3);
  const scaleX = 1 / (dw / sw), scaleY = 1 / (dh / sh); // OpenCV: scale = 1. / inv_scale
  const ix = Math.round(scaleX), iy = Math.round(scaleY);
  if (Math.abs(scaleX - ix) < Number.EPSILON && Math.abs(scaleY - iy) < Number.EPSILON) {
    // resizeAreaFast: integer block sums; the 2x2 SIMD path rounds half up, the general one
    // multiplies by the float 1/area and rounds half to even
    const inv = f32(1 / (ix * iy));
    for (let dy = 0; dy < dh; dy++) {
      for (let dx = 0; dx < dw; dx++) {
        for (let c = 0; c < 3; c++) {
          let sum = 0;
          for (let y = 0; y < iy; y++) {
            const row = ((top + dy * iy + y) * width + left + dx * ix) * 3 + c;
            for (let x = 0; x < ix; x++) sum += rgb[row + 3 * x];
          }
          out[(dy * dw + dx) * 3 + c] = ix === 2 && iy === 2 ? (sum + 2) >> 2 : saturate8(f32(sum * inv));
        }
      }
    }
    return out;
  }
  const xtab = areaTable(sw, dw, scaleX);
  const ytab = areaTable(sh, dh, scaleY);
  const buf = new Float32Array(dw * 3);
  const sum = new Float32Array(dw * 3);
  let prevDy = ytab[0][0];
  const flush = (dy) => {
    for (let i = 0; i < dw * 3; i++) out[dy * dw * 3 + i] = saturate8(sum[i]);
  };
  for (const [dy, sy, beta] of ytab) {
    buf.fill(0);
    const row = ((top + sy) * width + left) * 3;
    for (const [dx, sx, alpha] of xtab) {
      for (let c = 0; c < 3; c++) {
        buf[dx * 3 + c] = f32(buf[dx * 3 + c] + f32(rgb[row + sx * 3 + c] * alpha));
      }
    }
    if (dy !== prevDy) {
      flush(prevDy);
      for (let i = 0; i < dw * 3; i++) sum[i] = f32(beta * buf[i]);
      prevDy = dy;
    } else {
      for (let i = 0; i < dw * 3; i++) sum[i] = f32(sum[i] + f32(beta * buf[i]));
    }
  }
  flush(prevDy);
  return out;
}

/** Enlarging, as mobile_derm.app.preprocess.resize_square does it: the square's corners
 * onto the tensor's corners, bilinear, border replicated: cv2.warpAffine with
 * WARP_INVERSE_MAP and INTER_LINEAR as OpenCV 5 computes it, in float32 with fused
 * multiply-adds (emulated: a product of a float32 and a small integer is exact in a
 * double, so one Math.fround after the sum rounds once, as an FMA does). */
function warpUp(rgb, width, height, top, left, side, size) {
  const out = new Uint8Array(size * size * 3);
  const m = f32(side / size); // the Python matrix is float32
  const clampX = (v) => Math.min(Math.max(v, 0), width - 1);
  const clampY = (v) => Math.min(Math.max(v, 0), height - 1);
  for (let y = 0; y < size; y++) {
    const sy = f32(f32(m * y) + top);
    const y0 = Math.floor(sy), ay = f32(sy - y0);
    const r0 = clampY(y0) * width, r1 = clampY(y0 + 1) * width;
    for (let x = 0; x < size; x++) {
      const sx = f32(m * x + left);
      const x0 = Math.floor(sx), ax = f32(sx - x0);
      const c0 = clampX(x0), c1 = clampX(x0 + 1);
      for (let c = 0; c < 3; c++) {
        const p00 = rgb[(r0 + c0) * 3 + c], p01 = rgb[(r0 + c1) * 3 + c];
        const p10 = rgb[(r1 + c0) * 3 + c], p11 = rgb[(r1 + c1) * 3 + c];
        const a = f32(p00 + ax * (p01 - p00));
        const b = f32(p10 + ax * (p11 - p10));
        out[(y * size + x) * 3 + c] = saturate8(f32(a + ay * (b - a)));
      }
    }
  }
  return out;
}

/** mobile_derm.app.preprocess.resize_square: centre square, then size x size (shrink
 * with INTER_AREA, enlarge with the corner-aligned bilinear map, equal: copy). */
export function resizeSquare(rgb, width, height, size) {
  const {top, left, side} = squareBox(height, width);
  if (side > size) return resizeArea(rgb, width, top, left, side, side, size, size);
  if (side === size) {
    const out = new Uint8Array(size * size * 3);
    for (let y = 0; y < size; y++) {
      const from = ((top + y) * width + left) * 3;
      out.set(rgb.subarray(from, from + size * 3), y * size * 3);
    }
    return out;
  }
  return warpUp(rgb, width, height, top, left, side, size);
}

// ------------------------------------------------------------------ model input / output

/** mobile_derm.app.predict.LiteRTModel.input_tensor after the resize: (pixel - mean) / std
 * in float32, then quantized with the input tensor's own scale and zero point for
 * integer inputs (round half to even, clipped to the type's range). */
export function modelInput(pixels, mean, std, tensor) {
  const n = pixels.length;
  const m = mean.map(f32), s = std.map(f32);
  if (tensor.dtype === 'float32') {
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = f32(f32(pixels[i] - m[i % 3]) / s[i % 3]);
    return x;
  }
  const [lo, hi] = {uint8: [0, 255], int8: [-128, 127]}[tensor.dtype];
  const scale = f32(tensor.scale);
  const out = tensor.dtype === 'uint8' ? new Uint8Array(n) : new Int8Array(n);
  for (let i = 0; i < n; i++) {
    const x = f32(f32(pixels[i] - m[i % 3]) / s[i % 3]);
    const q = roundHalfEven(f32(f32(x / scale) + tensor.zero_point));
    out[i] = Math.min(hi, Math.max(lo, q));
  }
  return out;
}

/** LiteRTModel._read: integer outputs back to float32 with their scale and zero point. */
export function dequantize(values, tensor) {
  if (tensor.dtype === 'float32') return Float32Array.from(values);
  const scale = f32(tensor.scale);
  return Float32Array.from(values, (q) => f32((q - tensor.zero_point) * scale));
}

function round4(x) {
  return Math.round(x * 1e4) / 1e4;
}

/** mobile_derm.app.model_info.decision_scores: what the decision ranks classes by,
 * log(p) plus the decision step's offsets (none: log(p), the same order as p). */
export function decisionScores(probs, decision) {
  const offsets = decision && decision.offsets ? decision.offsets : null;
  return Array.from(probs, (p, i) => Math.log(Math.min(Math.max(p, 1e-30), 1)) + (offsets ? offsets[i] : 0));
}

/** mobile_derm.app.predict.Predictor.explain: top-k, malignancy against every operating
 * point, treatment-option scores, and abstention on either rule. `model` is the
 * site's model description (web-app writes it from the file's metadata). */
export function explain(probs, unfamiliarity, model, topK) {
  const info = model.info;
  const scores = decisionScores(probs, info.decision);
  const order = probs.length ? [...probs.keys()].sort((a, b) => scores[b] - scores[a]).slice(0, topK) : [];
  const top = order.map((i) => ({
    label: info.labels[i],
    display_name: (info.taxonomy[info.labels[i]] || {}).display_name || info.labels[i],
    probability: round4(probs[i]),
  }));
  let malignancy = 0;
  info.labels.forEach((label, i) => {
    if ((info.taxonomy[label] || {}).malignant) malignancy = f32(malignancy + probs[i]);
  });
  const operatingPoints = {};
  for (const [name, t] of Object.entries(info.malignancy_thresholds || {})) {
    operatingPoints[name] = {threshold: round4(t), refer: malignancy >= t};
  }
  const treatmentNames = [...new Set(info.labels.flatMap((l) => (info.taxonomy[l] || {}).treatments || []))].sort();
  const treatments = {};
  for (const name of treatmentNames) {
    let s = 0;
    info.labels.forEach((label, i) => {
      if (((info.taxonomy[label] || {}).treatments || []).includes(name)) s = f32(s + probs[i]);
    });
    treatments[name] = round4(s);
  }
  const reasons = [];
  const maxProb = probs.length ? Math.max(...probs) : 0;
  if (info.ood_threshold !== null && info.ood_threshold !== undefined && maxProb < info.ood_threshold) {
    reasons.push('low_confidence');
  }
  if (unfamiliarity !== null && info.familiarity && unfamiliarity > info.familiarity.abstain_above) {
    reasons.push('unfamiliar');
  }
  const result = {
    prediction: reasons.length ? 'unknown' : top[0].label,
    abstained: reasons.length > 0,
    abstain_reasons: reasons,
    top_k: top,
    malignancy: {score: round4(malignancy), operating_points: operatingPoints},
    treatment_scores: treatments,
  };
  if (unfamiliarity !== null) result.unfamiliarity = round4(unfamiliarity);
  return result;
}

// ------------------------------------------------------------------ the gate twin's inputs
// mobile_derm_quality.gate_twin.twin_inputs: the copies of the photo the OpenCV gate makes
// before it measures (gate.json's input_rule), each top-left in a zero-padded tensor.

/** cv2.resize(rgb, (dw, dh), INTER_NEAREST): source index floor(d * src / dst). */
function resizeNearest(rgb, w, h, dw, dh) {
  const out = new Uint8Array(dw * dh * 3);
  const fx = 1 / (dw / w), fy = 1 / (dh / h);
  for (let y = 0; y < dh; y++) {
    const sy = Math.min(Math.floor(y * fy), h - 1);
    for (let x = 0; x < dw; x++) {
      const sx = Math.min(Math.floor(x * fx), w - 1);
      for (let c = 0; c < 3; c++) out[(y * dw + x) * 3 + c] = rgb[(sy * w + sx) * 3 + c];
    }
  }
  return out;
}

/** OpenCV's fixed-point INTER_LINEAR tables along one axis: source index and the two
 * weights in 1/2048 (areaMode: INTER_AREA's rule when it enlarges). */
function linearTable(ssize, dsize, areaMode) {
  const scale = 1 / (dsize / ssize), inv = dsize / ssize;
  const ofs = new Int32Array(dsize), a0 = new Int32Array(dsize), a1 = new Int32Array(dsize);
  let xmax = dsize;
  for (let d = 0; d < dsize; d++) {
    let fx, sx;
    if (areaMode) {
      sx = Math.floor(d * scale);
      fx = f32((d + 1) - (sx + 1) * inv);
      fx = fx <= 0 ? 0 : f32(fx - Math.floor(fx));
    } else {
      fx = f32((d + 0.5) * scale - 0.5);
      sx = Math.floor(fx);
      fx = f32(fx - sx);
    }
    if (sx < 0) { fx = 0; sx = 0; }
    if (sx + 1 >= ssize) {
      xmax = Math.min(xmax, d);
      if (sx >= ssize - 1) { fx = 0; sx = ssize - 1; }
    }
    ofs[d] = sx;
    a0[d] = saturate16(f32(1 - fx) * 2048);
    a1[d] = saturate16(fx * 2048);
  }
  return {ofs, a0, a1, xmax};
}

function saturate16(v) {
  return Math.min(32767, Math.max(-32768, roundHalfEven(v)));
}

/** cv2.resize(rgb, (dw, dh), INTER_LINEAR) for uint8 (or INTER_AREA when enlarging): a
 * horizontal pass to integers in 1/2048, a vertical pass rounded as OpenCV's SIMD code does. */
function resizeLinear(rgb, w, h, dw, dh, areaMode = false) {
  const xt = linearTable(w, dw, areaMode), yt = linearTable(h, dh, areaMode);
  const rows = new Map();
  const hRow = (sy) => {
    if (rows.has(sy)) return rows.get(sy);
    const row = new Int32Array(dw * 3);
    for (let x = 0; x < dw; x++) {
      const sx = xt.ofs[x];
      for (let c = 0; c < 3; c++) {
        const p0 = rgb[(sy * w + sx) * 3 + c];
        row[x * 3 + c] = x < xt.xmax ? p0 * xt.a0[x] + rgb[(sy * w + sx + 1) * 3 + c] * xt.a1[x] : p0 * 2048;
      }
    }
    rows.set(sy, row);
    return row;
  };
  const out = new Uint8Array(dw * dh * 3);
  for (let y = 0; y < dh; y++) {
    const sy = yt.ofs[y];
    const r0 = hRow(sy), r1 = hRow(Math.min(sy + 1, h - 1));
    const b0 = yt.a0[y], b1 = yt.a1[y];
    for (let i = 0; i < dw * 3; i++) {
      const v = (((r0[i] >> 4) * b0) >> 16) + (((r1[i] >> 4) * b1) >> 16);
      out[y * dw * 3 + i] = Math.min(255, Math.max(0, (v + 2) >> 2));
    }
  }
  return out;
}

/** cv2.resize for uint8 RGB with the dispatch cv::resize makes. */
export function cvResize(rgb, w, h, dw, dh, interpolation) {
  if (dw === w && dh === h) return rgb.slice();
  if (interpolation === 'nearest') return resizeNearest(rgb, w, h, dw, dh);
  const scaleX = 1 / (dw / w), scaleY = 1 / (dh / h);
  const ix = Math.round(scaleX), iy = Math.round(scaleY);
  const areaFast = Math.abs(scaleX - ix) < Number.EPSILON && Math.abs(scaleY - iy) < Number.EPSILON;
  if (interpolation === 'area' && scaleX >= 1 && scaleY >= 1) return resizeArea(rgb, w, 0, 0, w, h, dw, dh);
  if (interpolation === 'linear' && areaFast && ix === 2 && iy === 2) return resizeArea(rgb, w, 0, 0, w, h, dw, dh);
  return resizeLinear(rgb, w, h, dw, dh, interpolation === 'area');
}

/** mobile_derm_quality.features.shrink: longer side at most `size`, never enlarged. */
export function shrink(image, size) {
  let {rgb, width: w, height: h} = image;
  const longSide = Math.max(h, w);
  if (longSide <= size) return image;
  if (longSide >= 4 * size) {
    // a large photo: point samples to twice the final size, then one exact halving
    const fw = Math.max(1, roundHalfEven(w * size / longSide)), fh = Math.max(1, roundHalfEven(h * size / longSide));
    const half = cvResize(rgb, w, h, 2 * fw, 2 * fh, 'nearest');
    return {rgb: cvResize(half, 2 * fw, 2 * fh, fw, fh, 'linear'), width: fw, height: fh};
  }
  while (Math.max(w, h) >= 2 * size) {
    const nw = Math.max(1, Math.floor(w / 2)), nh = Math.max(1, Math.floor(h / 2));
    rgb = cvResize(rgb, w, h, nw, nh, 'linear');
    w = nw; h = nh;
  }
  const s = size / Math.max(h, w);
  if (s < 1) {
    const nw = Math.max(1, roundHalfEven(w * s)), nh = Math.max(1, roundHalfEven(h * s));
    rgb = cvResize(rgb, w, h, nw, nh, 'area');
    w = nw; h = nh;
  }
  return {rgb, width: w, height: h};
}

function padded(image, size) {
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < image.height; y++) {
    out.set(image.rgb.subarray(y * image.width * 3, (y + 1) * image.width * 3), y * size * 3);
  }
  return out;
}

/** gate_twin.twin_inputs: {analysis, tiny, thumbnail, native_crop, sizes} for one decoded
 * photo ({rgb, width, height}); sizes come from gate.json (`contract`: the twin's metadata). */
export function twinInputs(photo, contract, minModelInput) {
  const analysisSize = contract.config.analysis_size;
  const [tinySize, cropSize, thumbSize, minSide] = [contract.inputs.tiny.shape[1], contract.inputs.native_crop.shape[1],
                                                    contract.inputs.thumbnail.shape[1], contract.min_analysis_side];
  let small = shrink(photo, analysisSize);
  if (Math.min(small.width, small.height) < minSide) {
    const nw = Math.max(minSide, small.width), nh = Math.max(minSide, small.height);
    small = {rgb: cvResize(small.rgb, small.width, small.height, nw, nh, 'nearest'), width: nw, height: nh};
  }
  const tiny = shrink(small, tinySize);
  const thumbnail = cvResize(small.rgb, small.width, small.height, thumbSize, thumbSize, 'area');
  const origin = (n) => Math.floor(Math.max(0, Math.floor((n - cropSize) / 2)) / 8) * 8;
  const y0 = origin(photo.height), x0 = origin(photo.width);
  const ch = Math.min(cropSize, photo.height - y0), cw = Math.min(cropSize, photo.width - x0);
  const crop = new Uint8Array(ch * cw * 3);
  for (let y = 0; y < ch; y++) {
    const from = ((y0 + y) * photo.width + x0) * 3;
    crop.set(photo.rgb.subarray(from, from + cw * 3), y * cw * 3);
  }
  const sizes = Int32Array.from([photo.height, photo.width, small.height, small.width, tiny.height, tiny.width,
                                 ch, cw, minModelInput]);
  return {analysis: padded(small, analysisSize), tiny: padded(tiny, tinySize), thumbnail,
          native_crop: padded({rgb: crop, width: cw, height: ch}, cropSize), sizes};
}

/** gate_twin.GateTwin.verdict's layout of the graph's outputs: the decision, and the reasons
 * of failing checks first, then of warnings, each once, with their guidance. */
export function gateVerdict(outputs, contract) {
  const checks = contract.outputs.passed;
  const codes = contract.reason_codes;
  const warnOnly = contract.config.warn_only || [];
  const failing = [], warned = [];
  checks.forEach((name, i) => {
    if (!outputs.applicable[i]) return;
    if (!outputs.passed[i]) failing.push(i);
    if (outputs.warn[i] || (!outputs.passed[i] && warnOnly.includes(name))) warned.push(i);
  });
  const reasons = [];
  for (const i of [...failing, ...warned.filter((i) => !failing.includes(i))]) {
    const code = outputs.reason[i] >= 0 ? codes[outputs.reason[i]] : null;
    if (code && !reasons.includes(code)) reasons.push(code);
  }
  const guidance = [];
  for (const code of reasons) {
    const words = contract.guidance[code];
    if (words && !guidance.includes(words)) guidance.push(words);
  }
  return {decision: contract.outputs.decision[outputs.decision[0]], reasons, guidance};
}
