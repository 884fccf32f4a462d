// Draws the refusal charts with Chart.js from /refusals/data and redraws them every 5 s.
// No inline script anywhere: the console's CSP allows only scripts it serves.
(function () {
  "use strict";
  const palette = ["#c0392b", "#2c7be5", "#e67e22", "#8e44ad", "#16a085", "#7f8c8d", "#d35400", "#2c3e50"];
  let byReason = null;
  let bySubject = null;

  function draw(data) {
    const reasons = Object.keys(data.by_reason);
    const datasets = reasons.map((reason, i) => ({
      label: reason, data: data.by_reason[reason], backgroundColor: palette[i % palette.length], stack: "refusals",
    }));
    const subjects = Object.keys(data.by_subject);
    const total = reasons.reduce((sum, r) => sum + data.by_reason[r].reduce((a, b) => a + b, 0), 0);
    document.getElementById("refusal-total").textContent = total + " refusals in the window";
    document.getElementById("by-reason").dataset.total = String(total);
    if (byReason === null) {
      byReason = new Chart(document.getElementById("by-reason"), {
        type: "bar", data: {labels: data.labels, datasets: datasets},
        options: {animation: false, scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}}},
      });
      bySubject = new Chart(document.getElementById("by-subject"), {
        type: "bar", data: {labels: subjects, datasets: [{label: "refusals", data: subjects.map((s) => data.by_subject[s]),
                                                          backgroundColor: "#c0392b"}]},
        options: {animation: false, indexAxis: "y", scales: {x: {beginAtZero: true, ticks: {precision: 0}}}},
      });
    } else {
      byReason.data.labels = data.labels;
      byReason.data.datasets = datasets;
      byReason.update();
      bySubject.data.labels = subjects;
      bySubject.data.datasets[0].data = subjects.map((s) => data.by_subject[s]);
      bySubject.update();
    }
  }

  function refresh() {
    const canvas = document.getElementById("by-reason");
    fetch(canvas.dataset.source, {credentials: "same-origin"})
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then(draw)
      .catch(() => { document.getElementById("refusal-total").textContent = "could not load the data"; });
  }

  document.addEventListener("DOMContentLoaded", () => {
    refresh();
    setInterval(refresh, 5000);
  });
})();
