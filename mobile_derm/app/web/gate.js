// The photo-quality gate step, kept apart from the classifier: the page asks it for a
// verdict ({decision: 'accept' | 'warn' | 'reject', reasons, guidance}) before it
// classifies. Its model is the gate's TFLite twin (gate.tflite, beside the classifier
// files; mobile_derm_quality.gate_twin), whose packed gate.json (copied into
// app_config.json) states its inputs, outputs, reason codes and guidance. A model folder
// without one gets a site whose gate is "not available": the page says so on every result
// and classifies every photo it can decode.
import {Tensor} from '@litertjs/core';

import {gateVerdict, twinInputs} from './pipeline.js';
import {AppError, compileTflite} from './runtime.js';

export const GATE_NOT_AVAILABLE = 'not_available';

/** The gate for this site: `description` is app_config.json's `gate` entry (null when the
 * model folder had no gate.tflite); `minModelInput` the classifier's input size (the
 * resolution check's minimum, as predict passes it). */
export async function createGate(description, minModelInput, onProgress) {
  if (!description) {
    return {
      available: false,
      async assess() {
        return {decision: GATE_NOT_AVAILABLE, reasons: [], guidance: []};
      },
    };
  }
  const {contract} = description;
  const compiled = await compileTflite(description.file, onProgress);
  const runner = compiled.signatures[description.signature];
  if (!runner) {
    throw new AppError(`${description.file} has no "${description.signature}" signature: not the gate twin this page runs.`);
  }
  return {
    available: true,
    /** photo: {rgb, width, height, transparent} as decoded (upright, reduced like predict's decode). */
    async assess(photo) {
      const inputs = twinInputs(photo, contract, minModelInput);
      const tensors = {};
      for (const [name, spec] of Object.entries(contract.inputs)) tensors[name] = new Tensor(inputs[name], spec.shape);
      let outputs;
      try {
        outputs = await runner.run(tensors);
      } finally {
        Object.values(tensors).forEach((t) => t.delete());
      }
      const values = {};
      for (const [name, tensor] of Object.entries(outputs)) {
        values[name] = Array.from(tensor.toTypedArray());
        tensor.delete();
      }
      const verdict = gateVerdict(values, contract);
      if (photo.transparent) {
        // as gate.assess_photo: transparent pixels were judged on grey, which the person should know
        verdict.reasons.push('transparent');
        verdict.guidance.push(contract.guidance.transparent);
        if (verdict.decision === 'accept') verdict.decision = 'warn';
      }
      return verdict;
    },
  };
}
