// A time chart of one field (uPlot), with vertical markers for events and the
// session's end. The container's data-points attribute holds the number of
// points shown, so a browser test can watch a chart grow. The first chart
// drawn with data sets the performance mark "deltawire:chart-drawn" (its
// startTime is milliseconds since navigation start: what `make bench` reports).

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const COLORS = ["#2f7ed8", "#d8612f", "#2fa84f", "#9b59b6", "#c0392b", "#16a085", "#7f8c8d"];
let nextColor = 0;

export const DRAWN_MARK = "deltawire:chart-drawn";

function markFirstDraw(u) {
  if (u.data[0].length && !performance.getEntriesByName(DRAWN_MARK).length) performance.mark(DRAWN_MARK);
}

export class TimeChart {
  constructor(container, { title, format, height = 200 }) {
    this.el = container;
    this.format = format;
    this.xs = [];
    this.ys = [];
    this.markers = []; // {ts, label, color}
    this.windowSec = null; // keep only this many seconds behind the newest point
    const color = COLORS[nextColor++ % COLORS.length];
    const fmt = (v) => (v == null ? "–" : format(v));
    const opts = {
      title,
      width: Math.max(300, container.clientWidth || 800),
      height,
      scales: { x: { time: true, range: (u, min, max) => this.xRange(min, max) } },
      legend: { live: true },
      series: [
        {},
        { label: title, stroke: color, fill: color + "22", width: 1.5, value: (u, v) => fmt(v), spanGaps: true },
      ],
      axes: [{}, { values: (u, vals) => vals.map(fmt), size: 80 }],
      hooks: { draw: [(u) => this.drawMarkers(u), markFirstDraw] },
    };
    this.u = new uPlot(opts, [this.xs, this.ys], container);
    this.sync();
    this.resizer = new ResizeObserver(() => {
      const w = container.clientWidth;
      if (w && Math.abs(w - this.u.width) > 2) this.u.setSize({ width: w, height });
    });
    this.resizer.observe(container);
  }

  /** Replace the data: points sorted by time, [[ts, value], ...]. */
  setPoints(points) {
    this.xs = points.map((p) => p[0]);
    this.ys = points.map((p) => p[1]);
    this.sync();
  }

  /** Add one point (usually the newest; an older one is put in its place). */
  push(ts, value) {
    let i = this.xs.length;
    if (i && ts <= this.xs[i - 1]) {
      while (i > 0 && this.xs[i - 1] > ts) i--;
      if (i > 0 && this.xs[i - 1] === ts) return; // already shown
    }
    this.xs.splice(i, 0, ts);
    this.ys.splice(i, 0, value);
    if (this.windowSec != null) {
      const cut = this.xs[this.xs.length - 1] - this.windowSec;
      let drop = 0;
      while (drop < this.xs.length && this.xs[drop] < cut) drop++;
      if (drop) {
        this.xs.splice(0, drop);
        this.ys.splice(0, drop);
      }
    }
    this.sync();
  }

  setMarkers(markers) {
    this.markers = markers;
    // Before its first data a chart has no axes to draw: redrawing then fails.
    // Setting the data again recomputes the x range (an `extend` marker widens it).
    if (this.xs.length) this.sync();
  }

  /** The x range: the data's, widened to markers marked `extend` (the end of a
   * session just after its last sample), and never a single instant. */
  xRange(min, max) {
    if (min == null || max == null) return [min, max];
    for (const m of this.markers) if (m.extend && m.ts > max) max = m.ts;
    return min === max ? [min - 1, max + 1] : [min, max];
  }

  sync() {
    this.u.setData([this.xs, this.ys]);
    this.el.dataset.points = String(this.xs.length);
  }

  drawMarkers(u) {
    const { ctx, bbox } = u;
    ctx.save();
    ctx.font = `${Math.round(11 * devicePixelRatio)}px sans-serif`;
    for (const m of this.markers) {
      const x = Math.round(u.valToPos(m.ts, "x", true));
      if (x < bbox.left || x > bbox.left + bbox.width) continue;
      ctx.strokeStyle = m.color || "#e67e22";
      ctx.fillStyle = m.color || "#e67e22";
      ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
      ctx.lineWidth = devicePixelRatio;
      ctx.beginPath();
      ctx.moveTo(x, bbox.top);
      ctx.lineTo(x, bbox.top + bbox.height);
      ctx.stroke();
      // The label right of its line, or left of it where it would leave the plot.
      const w = ctx.measureText(m.label).width;
      const gap = 3 * devicePixelRatio;
      const lx = x + gap + w > bbox.left + bbox.width ? x - gap - w : x + gap;
      ctx.fillText(m.label, lx, bbox.top + 12 * devicePixelRatio);
    }
    ctx.restore();
  }

  destroy() {
    this.resizer.disconnect();
    this.u.destroy();
  }
}
