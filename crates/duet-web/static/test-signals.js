// The test signals of docs/test-signals.md in a browser: a canvas that sends the
// stamped picture, WebAudio that sends the beeps, and readers that measure
// both in what arrives. Sender and receiver share the wall clock (Date.now).

const CELLS = 40;
const TWO_POW_32 = 4294967296;

/** The 32-bit stamp value of a wall-clock time in ms, and its 6-bit checksum. */
function stampBits(ms) {
  const value = Math.floor(ms) % TWO_POW_32;
  const sum = ((value >>> 24) & 255) + ((value >>> 16) & 255) + ((value >>> 8) & 255) + (value & 255);
  return { value, check: sum % 64 };
}

/** Cell colours, left to right: sync (1, 0), 32 bits of the time, 6 bits of checksum. */
export function stampCells(ms) {
  const { value, check } = stampBits(ms);
  const cells = [1, 0];
  for (let bit = 31; bit >= 0; bit--) cells.push(Math.floor(value / 2 ** bit) % 2);
  for (let bit = 5; bit >= 0; bit--) cells.push((check >> bit) & 1);
  return cells;
}

/** The stamp's time (ms mod 2^32) from 40 cell bits, or null when sync or checksum fail. */
export function decodeCells(cells) {
  if (cells.length !== CELLS || cells[0] !== 1 || cells[1] !== 0) return null;
  let value = 0;
  for (let i = 2; i < 34; i++) value = value * 2 + cells[i];
  let check = 0;
  for (let i = 34; i < 40; i++) check = check * 2 + cells[i];
  return stampBits(value).check === check ? value : null;
}

/** One-way latency of a stamp read now: (now - stamp) mod 2^32. */
export function stampAge(stamp, nowMs) {
  return (((Math.floor(nowMs) - stamp) % TWO_POW_32) + TWO_POW_32) % TWO_POW_32;
}

const BARS = ['#c0c0c0', '#c0c000', '#00c0c0', '#00c000', '#c000c0', '#c00000', '#0000c0'];

/**
 * The stamped picture, drawn on a canvas at the wall clock's frame times and
 * captured right after each drawing, so a frame's stamp is its capture time.
 */
export class StampedVideo {
  /** `noisy`: sensor-like noise on every pixel, so the picture costs the
   * encoder what a camera's does (the clean pattern costs a twentieth). */
  constructor(width, height, fps, noisy = false) {
    this.canvas = document.createElement('canvas');
    this.canvas.width = width;
    this.canvas.height = height;
    this.fps = fps;
    this.frames = 0;
    this.noise = noisy ? sensorNoise() : null;
    this.context = this.canvas.getContext('2d', { alpha: false, willReadFrequently: noisy });
    this.stream = this.canvas.captureStream(0);
    this.track = this.stream.getVideoTracks()[0];
    this.timer = null;
  }

  start() {
    // Frame n is due at start + n * period; a late timer catches up by
    // skipping frames, never by sending a burst.
    const period = 1000 / this.fps;
    const startAt = Date.now();
    let next = 0;
    const tick = () => {
      const now = Date.now();
      this.draw(now);
      next = Math.max(next + 1, Math.floor((now - startAt) / period) + 1);
      this.timer = setTimeout(tick, Math.max(0, startAt + next * period - Date.now()));
    };
    tick();
  }

  stop() {
    clearTimeout(this.timer);
    this.track.stop();
  }

  draw(nowMs) {
    const { width, height } = this.canvas;
    const ctx = this.context;
    const s = Math.floor(width / CELLS);
    const barWidth = Math.ceil(width / BARS.length);
    BARS.forEach((colour, i) => {
      ctx.fillStyle = colour;
      ctx.fillRect(i * barWidth, s, barWidth, height - s);
    });
    // A box that slides across and back: real motion for the encoder.
    const boxSize = Math.max(16, Math.floor(height / 6));
    const travel = width - boxSize;
    const phase = (this.frames * 8) % (2 * travel);
    const x = phase < travel ? phase : 2 * travel - phase;
    ctx.fillStyle = '#f0f0f0';
    ctx.fillRect(x, Math.floor(height / 2), boxSize, boxSize);
    if (this.noise) this.addNoise(s);
    ctx.fillStyle = '#000000';
    ctx.fillRect(0, 0, width, s);
    stampCells(nowMs).forEach((bit, i) => {
      ctx.fillStyle = bit ? '#ffffff' : '#000000';
      ctx.fillRect(i * s, 0, s, s);
    });
    this.frames += 1;
    this.track.requestFrame();
  }

  /** Fresh noise on everything below the stamp's row: the same table read
   * from a random place each frame. */
  addNoise(top) {
    const { width, height } = this.canvas;
    const image = this.context.getImageData(0, top, width, height - top);
    const data = image.data;
    const noise = this.noise;
    const mask = noise.length - 1;
    const offset = Math.floor(Math.random() * noise.length);
    for (let i = 0; i < data.length; i += 4) {
      const n = noise[(i + offset) & mask];
      data[i] += n;
      data[i + 1] += n;
      data[i + 2] += n;
    }
    this.context.putImageData(image, 0, top);
  }
}

/** 2^20 noise values, triangular in ±15 (the native `test:noisy`'s). */
function sensorNoise() {
  const noise = new Int8Array(1 << 20);
  for (let i = 0; i < noise.length; i += 1) {
    noise[i] = Math.floor(Math.random() * 16) + Math.floor(Math.random() * 16) - 15;
  }
  return noise;
}

/**
 * Reads the stamp of every frame a <video> element presents and keeps the
 * one-way latencies, taken when the frame is handed to the compositor.
 */
export class StampReader {
  constructor(video) {
    this.video = video;
    this.canvas = document.createElement('canvas');
    this.context = this.canvas.getContext('2d', { willReadFrequently: true });
    this.latencies = [];
    this.presented = 0;
    this.stamped = 0;
    this.firstFrameAt = null;
    this.onFirstFrame = null;
    this.active = true;
    this.video.requestVideoFrameCallback((now, meta) => this.onFrame(meta));
  }

  stop() {
    this.active = false;
  }

  onFrame(meta) {
    if (!this.active) return;
    const readyAt = performance.timeOrigin + meta.presentationTime;
    this.presented += 1;
    if (this.firstFrameAt === null) {
      this.firstFrameAt = readyAt;
      if (this.onFirstFrame) this.onFirstFrame(readyAt);
    }
    const stamp = this.read(meta.width, meta.height);
    if (stamp !== null) {
      const age = stampAge(stamp, readyAt);
      if (age < 30000) {
        this.stamped += 1;
        this.latencies.push(age);
      }
    }
    this.video.requestVideoFrameCallback((now, next) => this.onFrame(next));
  }

  /** The stamp of the frame on screen now, read at the frame's own size. */
  read(width, height) {
    const s = Math.floor(width / CELLS);
    if (s < 2 || height < s) return null;
    if (this.canvas.width !== width || this.canvas.height !== s) {
      this.canvas.width = width;
      this.canvas.height = s;
    }
    this.context.drawImage(this.video, 0, 0, width, s, 0, 0, width, s);
    const pixels = this.context.getImageData(0, 0, width, s).data;
    const half = Math.max(1, Math.floor(s / 2));
    const from = Math.floor((s - half) / 2);
    const cells = [];
    for (let cell = 0; cell < CELLS; cell++) {
      let sum = 0;
      for (let y = from; y < from + half; y++) {
        for (let x = cell * s + from; x < cell * s + from + half; x++) {
          const i = (y * width + x) * 4;
          // BT.601 limited-range luma of the displayed RGB, as the spec's Y.
          sum += 16 + (65.481 * pixels[i] + 128.553 * pixels[i + 1] + 24.966 * pixels[i + 2]) / 255;
        }
      }
      cells.push(sum / (half * half) > 126 ? 1 : 0);
    }
    return decodeCells(cells);
  }
}

/**
 * The beeps: a sine of `freq` Hz at half of full scale, 100 ms from every whole
 * second of the wall clock, sent as a MediaStream track.
 */
export class BeepSender {
  constructor(audioContext, freq) {
    this.ctx = audioContext;
    this.oscillator = new OscillatorNode(audioContext, { frequency: freq });
    this.gain = new GainNode(audioContext, { gain: 0 });
    this.destination = new MediaStreamAudioDestinationNode(audioContext, { channelCount: 1 });
    this.oscillator.connect(this.gain).connect(this.destination);
    this.track = this.destination.stream.getAudioTracks()[0];
    this.scheduledUpTo = 0;
    this.timer = null;
  }

  start() {
    this.oscillator.start();
    const schedule = () => {
      // The render clock runs at the pace of the wall clock; map the next whole
      // seconds onto it afresh every time, so drift never accumulates.
      const nowMs = Date.now();
      const ctxNow = this.ctx.currentTime;
      for (let second = Math.ceil(nowMs / 1000) * 1000; second < nowMs + 1500; second += 1000) {
        if (second <= this.scheduledUpTo) continue;
        const at = ctxNow + (second - nowMs) / 1000;
        if (at <= ctxNow) continue;
        this.gain.gain.setValueAtTime(0.5, at);
        this.gain.gain.setValueAtTime(0, at + 0.1);
        this.scheduledUpTo = second;
      }
    };
    schedule();
    this.timer = setInterval(schedule, 250);
  }

  stop() {
    clearInterval(this.timer);
    this.oscillator.stop();
    this.track.stop();
  }
}

let workletLoaded = null;

/**
 * Finds beep onsets in a received audio stream (first 5 ms window above 0.1 RMS
 * after 300 ms below it) and their frequency, and keeps mouth-to-ear latencies.
 */
export class BeepListener {
  static async create(audioContext, stream) {
    if (workletLoaded === null) workletLoaded = audioContext.audioWorklet.addModule('/beep-worklet.js');
    await workletLoaded;
    return new BeepListener(audioContext, stream);
  }

  constructor(audioContext, stream) {
    this.ctx = audioContext;
    this.latencies = [];
    this.frequencies = [];
    this.missed = 0;
    this.source = new MediaStreamAudioSourceNode(audioContext, { mediaStream: stream });
    this.node = new AudioWorkletNode(audioContext, 'beep-detector', { numberOfOutputs: 1 });
    this.silent = new GainNode(audioContext, { gain: 0 });
    this.source.connect(this.node).connect(this.silent).connect(audioContext.destination);
    this.node.port.onmessage = (event) => this.onBeep(event.data);
  }

  onBeep({ onsetTime, freq }) {
    // The onset's wall-clock time: now, minus how long ago (in render time) it was processed.
    const onsetMs = Date.now() - (this.ctx.currentTime - onsetTime) * 1000;
    const latency = onsetMs - Math.floor(onsetMs / 1000) * 1000;
    if (latency > 500) {
      this.missed += 1;
      return;
    }
    this.latencies.push(latency);
    this.frequencies.push(freq);
  }

  stop() {
    this.source.disconnect();
    this.node.disconnect();
    this.silent.disconnect();
  }
}

/** Percentiles of a list of numbers by nearest rank, as the native report
 * computes them (so the two can be compared), or nulls when it is empty. */
export function percentiles(values) {
  if (values.length === 0) return { p50: null, p95: null, p99: null, max: null };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length))) - 1];
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: sorted[sorted.length - 1] };
}

/** The median of a list of numbers, or null. */
export function median(values) {
  return values.length === 0 ? null : percentiles(values).p50;
}
