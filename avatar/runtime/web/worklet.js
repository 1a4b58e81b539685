// AudioWorklet: forwards the mono input (channel 0 mixed down) to the page in ~20 ms Float32 blocks.
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = Math.round(sampleRate * 0.02);
    this.buf = new Float32Array(this.block);
    this.n = 0;
    // "flush": send what is buffered (the end of a stream), then "flushed"
    this.port.onmessage = (e) => {
      if (e.data === "flush") {
        if (this.n) this.port.postMessage(this.buf.slice(0, this.n));
        this.n = 0;
        this.port.postMessage("flushed");
      }
    };
  }
  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const len = input[0].length;
      for (let i = 0; i < len; i++) {
        let v = 0;
        for (let c = 0; c < input.length; c++) v += input[c][i];
        this.buf[this.n++] = v / input.length;
        if (this.n === this.block) {
          this.port.postMessage(this.buf.slice(0));
          this.n = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("capture", Capture);
