// The photo-quality gate step, kept apart from the classifier: the page asks it for a
// verdict ({decision: 'accept' | 'warn' | 'reject', reasons, guidance}) before it
// classifies. Its model is the gate's TFLite twin (gate.tflite, beside the classifier
// files); a model folder without one gets a site whose gate is "not available": the page
// says so on every result and classifies every photo it can decode.

export const GATE_NOT_AVAILABLE = 'not_available';

/** The gate for this site: `description` is app_config.json's `gate` entry (null when the
 * model folder had no gate.tflite). */
export async function createGate(description) {
  if (!description) {
    return {
      available: false,
      async assess() {
        return {decision: GATE_NOT_AVAILABLE, reasons: [], guidance: []};
      },
    };
  }
  throw new Error('this site names a gate model, but this version of the page cannot run it');
}
