/* Marketer dashboard: draws the charts from the page's inert JSON (#report-data) with Chart.js
   and makes every chart element a link to the calls behind it. No inline script (strict CSP). */
(function () {
  "use strict";

  // Changing the model re-renders the report on the server: the split is computed there.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form) select.form.requestSubmit();
    });
  });

  var node = document.getElementById("report-data");
  if (!node || typeof window.Chart === "undefined") return;
  var data = JSON.parse(node.textContent);
  var Chart = window.Chart;
  var brand = "#12355b";
  var accent = "#1f7a5a";
  var muted = "#9aa5b1";
  var locale = data.lang === "fr" ? "fr-FR" : "en-GB";
  var format = new Intl.NumberFormat(locale, { maximumFractionDigits: 1 });

  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  Chart.defaults.color = "#5b6673";
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.animation = false;

  function go(url) {
    if (url) window.location.assign(url);
  }

  function shortDate(iso) {
    var parts = iso.split("-");
    return parts[2] + "/" + parts[1];
  }

  var seriesCanvas = document.getElementById("series-chart");
  if (seriesCanvas) {
    var datasets = [
      {
        label: data.t.current,
        data: data.series,
        borderColor: brand,
        backgroundColor: "rgba(18,53,91,.12)",
        fill: true,
        cubicInterpolationMode: "monotone",
        pointRadius: data.series.length > 45 ? 0 : 3,
        pointHoverRadius: 5,
      },
    ];
    if (data.previous && data.previous.length) {
      datasets.push({
        label: data.t.previous,
        data: data.previous,
        borderColor: muted,
        borderDash: [5, 4],
        backgroundColor: "transparent",
        cubicInterpolationMode: "monotone",
        pointRadius: 0,
      });
    }
    new Chart(seriesCanvas, {
      type: "line",
      data: { labels: data.labels.map(shortDate), datasets: datasets },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          y: { beginAtZero: true, ticks: { precision: 0 }, grid: { color: "#eef0f3" } },
          x: { grid: { display: false }, ticks: { maxTicksLimit: 12 } },
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12 } },
          tooltip: {
            callbacks: {
              title: function (items) {
                return data.labels[items[0].dataIndex];
              },
            },
          },
        },
        onClick: function (_event, elements) {
          if (elements.length) go(data.dayLinks[elements[0].index]);
        },
      },
    });
  }

  var splitCanvas = document.getElementById("split-chart");
  if (splitCanvas) {
    new Chart(splitCanvas, {
      type: "bar",
      data: {
        labels: data.split.labels,
        datasets: [
          {
            label: data.t.calls,
            data: data.split.values,
            backgroundColor: accent,
            borderRadius: 4,
            maxBarThickness: 26,
          },
        ],
      },
      options: {
        indexAxis: "y",
        scales: {
          x: { beginAtZero: true, grid: { color: "#eef0f3" } },
          y: { grid: { display: false } },
        },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (item) {
                return " " + format.format(item.raw) + " " + data.t.calls.toLowerCase();
              },
            },
          },
        },
        onClick: function (_event, elements) {
          if (elements.length) go(data.split.links[elements[0].index]);
        },
      },
    });
  }

  var heatCanvas = document.getElementById("heatmap-chart");
  if (heatCanvas) {
    var hours = [];
    for (var h = 0; h < 24; h++) hours.push(String(h));
    var cells = [];
    var highest = 0;
    data.heatmap.forEach(function (row, weekday) {
      row.forEach(function (value, hour) {
        cells.push({ x: String(hour), y: data.t.weekdays[weekday], v: value, d: weekday, h: hour });
        if (value > highest) highest = value;
      });
    });
    new Chart(heatCanvas, {
      type: "matrix",
      data: {
        datasets: [
          {
            label: data.t.calls,
            data: cells,
            backgroundColor: function (context) {
              var cell = context.dataset.data[context.dataIndex];
              if (!cell || !cell.v) return "#f1f3f6";
              var alpha = 0.2 + 0.8 * (cell.v / (highest || 1));
              return "rgba(31,122,90," + alpha.toFixed(3) + ")";
            },
            borderColor: "#ffffff",
            borderWidth: 1,
            borderRadius: 2,
            width: function (context) {
              var area = context.chart.chartArea;
              return area ? area.width / 24 - 1 : 10;
            },
            height: function (context) {
              var area = context.chart.chartArea;
              return area ? area.height / 7 - 1 : 10;
            },
          },
        ],
      },
      options: {
        scales: {
          x: {
            type: "category",
            labels: hours,
            offset: true,
            grid: { display: false },
            ticks: {
              autoSkip: false,
              maxRotation: 0,
              callback: function (_value, index) { return index % 3 === 0 ? index + "h" : ""; },
            },
          },
          y: {
            type: "category",
            // Listed bottom-up by the category axis: reversed, Monday is the top row.
            labels: data.t.weekdays.slice().reverse(),
            offset: true,
            grid: { display: false },
          },
        },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              title: function () { return ""; },
              label: function (item) {
                var cell = item.raw;
                return cell.y + " " + cell.h + "h: " + format.format(cell.v);
              },
            },
          },
        },
        onClick: function (_event, elements) {
          if (!elements.length) return;
          var cell = cells[elements[0].index];
          go(data.slotLink.replace("SLOT", cell.d + "-" + (cell.h < 10 ? "0" : "") + cell.h));
        },
      },
    });
  }
})();
