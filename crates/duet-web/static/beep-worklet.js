// Beep onsets of docs/test-signals.md, found on the audio render thread: the first
// 5 ms window whose RMS rises above 0.1 after at least 300 ms below it, and
// the burst's frequency from the zero crossings over its middle 50 ms.

class BeepDetector extends AudioWorkletProcessor {
  constructor() {
    super();
    this.window = Math.round(0.005 * sampleRate);
    this.sumSquares = 0;
    this.filled = 0;
    this.windowStart = 0;
    // Before the first sample nothing was heard: a beep at the very start counts.
    this.quietFor = 0.3 * sampleRate;
    this.burst = null;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const sample = channel[i];
      const frame = currentFrame + i;
      if (this.burst !== null) this.collect(sample);
      if (this.filled === 0) this.windowStart = frame;
      this.sumSquares += sample * sample;
      this.filled += 1;
      if (this.filled === this.window) {
        this.endWindow();
      }
    }
    return true;
  }

  endWindow() {
    const rms = Math.sqrt(this.sumSquares / this.filled);
    const loud = rms > 0.1;
    if (loud && this.quietFor >= 0.3 * sampleRate && this.burst === null) {
      this.burst = { onsetFrame: this.windowStart, samples: new Float32Array(Math.round(0.1 * sampleRate)), length: 0 };
      // The window that crossed the threshold is part of the burst.
    }
    this.quietFor = loud ? 0 : this.quietFor + this.filled;
    this.sumSquares = 0;
    this.filled = 0;
  }

  collect(sample) {
    const burst = this.burst;
    burst.samples[burst.length++] = sample;
    if (burst.length < burst.samples.length) return;
    const from = Math.round(0.025 * sampleRate);
    const to = Math.round(0.075 * sampleRate);
    let crossings = 0;
    for (let i = from + 1; i < to; i++) {
      if ((burst.samples[i - 1] < 0) !== (burst.samples[i] < 0)) crossings += 1;
    }
    const freq = crossings / 2 / ((to - from) / sampleRate);
    this.port.postMessage({ onsetTime: burst.onsetFrame / sampleRate, freq });
    this.burst = null;
  }
}

registerProcessor('beep-detector', BeepDetector);
