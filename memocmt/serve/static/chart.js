// A small line chart on a canvas: the probability of each emotion per utterance, over stream time.
"use strict";

const EMOTION_COLORS = ["#667085", "#e3a008", "#2f6fdb", "#d92d20", "#12b76a", "#7a5af8", "#ee46bc", "#0e9384"];

class EmotionChart {
  constructor(canvas, legend) {
    this.canvas = canvas;
    this.legend = legend;
    this.labels = [];
    this.points = []; // {t, probabilities}
    window.addEventListener("resize", () => this.draw());
  }

  setLabels(labels) {
    this.labels = labels;
    this.legend.replaceChildren(...labels.map((label, i) => {
      const item = document.createElement("span");
      item.textContent = label;
      item.style.setProperty("--c", EMOTION_COLORS[i % EMOTION_COLORS.length]);
      return item;
    }));
    this.draw();
  }

  add(t, probabilities) {
    this.points.push({ t, probabilities });
    this.draw();
  }

  clear() {
    this.points = [];
    this.draw();
  }

  draw() {
    const c = this.canvas, ratio = window.devicePixelRatio || 1;
    const width = c.clientWidth || c.width, height = c.clientHeight || c.height;
    c.width = Math.round(width * ratio);
    c.height = Math.round(height * ratio);
    const g = c.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const left = 36, right = 10, top = 10, bottom = 24;
    const w = width - left - right, h = height - top - bottom;
    const t0 = this.points.length ? this.points[0].t : 0;
    const t1 = this.points.length ? Math.max(this.points[this.points.length - 1].t, t0 + 10) : 10;
    const x = (t) => left + ((t - t0) / (t1 - t0)) * w;
    const y = (p) => top + (1 - p) * h;
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#667085";
    g.strokeStyle = "#e4e7ec";
    g.lineWidth = 1;
    for (const p of [0, 0.5, 1]) {
      g.beginPath(); g.moveTo(left, y(p)); g.lineTo(left + w, y(p)); g.stroke();
      g.fillText(p.toFixed(1), 6, y(p) + 4);
    }
    const ticks = 5;
    for (let k = 0; k <= ticks; k++) {
      const t = t0 + ((t1 - t0) * k) / ticks;
      g.fillText(`${t.toFixed(0)} s`, x(t) - 10, height - 6);
    }
    this.labels.forEach((label, i) => {
      const color = EMOTION_COLORS[i % EMOTION_COLORS.length];
      g.strokeStyle = color;
      g.fillStyle = color;
      g.lineWidth = 2;
      g.beginPath();
      this.points.forEach((pt, j) => {
        const px = x(pt.t), py = y(pt.probabilities[label] ?? 0);
        if (j === 0) g.moveTo(px, py); else g.lineTo(px, py);
      });
      g.stroke();
      for (const pt of this.points) {
        g.beginPath(); g.arc(x(pt.t), y(pt.probabilities[label] ?? 0), 2.5, 0, 2 * Math.PI); g.fill();
      }
    });
  }
}
