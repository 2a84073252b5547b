// AudioWorklet: microphone samples at the context's rate -> 16 kHz PCM16 chunks for the socket.
// A biquad low-pass below the new Nyquist frequency, then linear interpolation at 16 kHz.
const TARGET_RATE = 16000;
const CHUNK = 1600; // samples per message (100 ms)

class Pcm16Sender extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.pos = 0; // position of the next output sample, in input samples from the previous block's last one
    this.prev = 0;
    this.out = new Int16Array(CHUNK);
    this.fill = 0;
    this.filter = this.step > 1 ? lowpass(0.45 * TARGET_RATE, sampleRate) : null;
    this.z1 = 0; this.z2 = 0;
    this.running = true;
    this.port.onmessage = (e) => { if (e.data === "flush") this.flush(); if (e.data === "stop") { this.flush(); this.running = false; } };
  }

  flush() {
    if (this.fill > 0) {
      this.port.postMessage(this.out.slice(0, this.fill).buffer);
      this.fill = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!this.running) return false;
    if (!input || input.length === 0) return true;
    const channels = input.length, n = input[0].length;
    const x = new Float32Array(n);
    for (let c = 0; c < channels; c++) for (let i = 0; i < n; i++) x[i] += input[c][i] / channels;
    if (this.filter) {
      const f = this.filter;
      for (let i = 0; i < n; i++) { // transposed direct form II
        const y = f.b0 * x[i] + this.z1;
        this.z1 = f.b1 * x[i] - f.a1 * y + this.z2;
        this.z2 = f.b2 * x[i] - f.a2 * y;
        x[i] = y;
      }
    }
    // Output sample k lies at input position pos (0 = the previous block's last sample, 1 = x[0], ...).
    while (this.pos <= n) {
      const i = Math.floor(this.pos), frac = this.pos - i;
      const a = i === 0 ? this.prev : x[i - 1];
      const b = i >= n ? x[n - 1] : x[i];
      const v = Math.max(-1, Math.min(1, a + (b - a) * frac));
      this.out[this.fill++] = Math.round(v * 32767);
      if (this.fill === CHUNK) this.flush();
      this.pos += this.step;
    }
    this.pos -= n;
    this.prev = x[n - 1];
    return true;
  }
}

function lowpass(cutoff, rate) { // RBJ cookbook, Q = 1/sqrt(2)
  const w = 2 * Math.PI * cutoff / rate, alpha = Math.sin(w) / Math.SQRT2, cos = Math.cos(w), a0 = 1 + alpha;
  return { b0: (1 - cos) / 2 / a0, b1: (1 - cos) / a0, b2: (1 - cos) / 2 / a0, a1: -2 * cos / a0, a2: (1 - alpha) / a0 };
}

registerProcessor("pcm16-sender", Pcm16Sender);
