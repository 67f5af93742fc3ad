// AudioWorklet processors (loaded with audioWorklet.addModule).
//
// unit-capture:  microphone at the context rate -> anti-aliasing low-pass (windowed sinc) -> linear
//                resampling to the model's rate -> Float32Array units of samplesPerUnit, posted to
//                the main thread (one per 160 ms). {shift} messages move the unit boundaries.
// unit-playback: Float32Array units at the model's rate (posted by the main thread) -> jitter buffer
//                (starts after prebufferUnits, re-buffers after an underrun) -> linear resampling to
//                the context rate. Reports {played, underruns, dropped, buffered, rms} to the main thread.

class UnitCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.ratio = sampleRate / o.targetRate; // input samples per output sample
    this.spu = o.samplesPerUnit;
    this.unit = new Float32Array(this.spu);
    this.fill = 0;
    // Low-pass FIR at 0.45 * targetRate (Blackman-windowed sinc), only when downsampling.
    const taps = this.ratio > 1 ? 31 : 1;
    const fc = Math.min(0.5, 0.45 / this.ratio);
    this.fir = new Float32Array(taps);
    let sum = 0;
    for (let i = 0; i < taps; i++) {
      const m = i - (taps - 1) / 2;
      const sinc = m === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * m) / (Math.PI * m);
      const w = taps === 1 ? 1 : 0.42 - 0.5 * Math.cos(2 * Math.PI * i / (taps - 1)) + 0.08 * Math.cos(4 * Math.PI * i / (taps - 1));
      this.fir[i] = sinc * w;
      sum += this.fir[i];
    }
    for (let i = 0; i < taps; i++) this.fir[i] /= sum;
    this.hist = new Float32Array(taps); // circular history of raw input
    this.hpos = 0;
    this.prev = 0; // last filtered sample
    this.phase = 0; // position of the next output sample, in input samples after `prev`
    // {shift: n} from the main thread moves the unit boundaries: n > 0 drops n output samples
    // (units complete earlier), n < 0 inserts -n zeros (later).
    this.shift = 0;
    this.port.onmessage = (e) => { this.shift += e.data.shift | 0; };
  }

  emit(x) {
    this.unit[this.fill++] = x;
    if (this.fill === this.spu) {
      this.port.postMessage(this.unit, [this.unit.buffer]);
      this.unit = new Float32Array(this.spu); // the old buffer was transferred
      this.fill = 0;
    }
  }

  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    const taps = this.fir.length;
    for (let i = 0; i < ch.length; i++) {
      this.hist[this.hpos] = ch[i];
      this.hpos = (this.hpos + 1) % taps;
      let y = 0;
      for (let k = 0; k < taps; k++) y += this.fir[k] * this.hist[(this.hpos + k) % taps];
      // Output samples that fall between prev (t = 0) and y (t = 1).
      while (this.phase <= 1) {
        for (; this.shift < 0; this.shift++) this.emit(0);
        if (this.shift > 0) this.shift--;
        else this.emit(this.prev + (y - this.prev) * this.phase);
        this.phase += this.ratio;
      }
      this.phase -= 1;
      this.prev = y;
    }
    return true;
  }
}

class UnitPlayback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.step = o.sourceRate / sampleRate; // source samples per output sample
    this.spu = o.samplesPerUnit;
    this.prebuffer = o.prebufferUnits * this.spu;
    this.ring = new Float32Array(this.spu * 32); // 5 s: a unit that arrives when full is dropped
    this.read = 0; // fractional read position (monotonic, in source samples)
    this.write = 0; // samples written (monotonic)
    this.playing = false;
    this.played = 0; // source samples played
    this.underruns = 0;
    this.dropped = 0;
    this.sq = 0;
    this.sqN = 0;
    this.lastReport = 0;
    this.port.onmessage = (e) => {
      const x = e.data;
      if (this.write + x.length - Math.floor(this.read) > this.ring.length) { this.dropped++; return; }
      for (let i = 0; i < x.length; i++) this.ring[(this.write + i) % this.ring.length] = x[i];
      this.write += x.length;
    };
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = this.ring.length;
    if (!this.playing && this.write - this.read >= this.prebuffer) this.playing = true;
    for (let i = 0; i < out.length; i++) {
      if (!this.playing) { out[i] = 0; continue; }
      const i0 = Math.floor(this.read);
      if (i0 + 1 >= this.write) { // underrun: silence, then build the buffer up again
        this.playing = false;
        this.underruns++;
        out[i] = 0;
        continue;
      }
      const f = this.read - i0;
      const y = this.ring[i0 % n] * (1 - f) + this.ring[(i0 + 1) % n] * f;
      out[i] = y;
      this.sq += y * y;
      this.sqN++;
      this.read += this.step;
    }
    this.played = Math.floor(this.read);
    if (this.played - this.lastReport >= this.spu || (!this.playing && this.lastReport !== this.played)) {
      this.lastReport = this.played;
      this.port.postMessage({played: Math.floor(this.played / this.spu), underruns: this.underruns,
                             dropped: this.dropped, buffered: (this.write - this.read) / this.spu,
                             rms: this.sqN ? Math.sqrt(this.sq / this.sqN) : 0}); // over everything played
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    return true;
  }
}

registerProcessor('unit-capture', UnitCapture);
registerProcessor('unit-playback', UnitPlayback);
