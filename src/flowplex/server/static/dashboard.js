// Live updates: every few seconds the page's #live region is fetched again and swapped in
// (the server renders only that region when asked with X-Flowplex-Fragment). Forms live
// outside the region, so typing is never interrupted. No library, nothing from the network.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!live || !live.dataset.refresh) { return; }
  var every = Number(live.dataset.every || 2000);
  var busy = false;

  function show(ok) {
    if (!status) { return; }
    status.className = ok ? "on" : "off";
    status.textContent = ok ? "live" : "offline: retrying";
  }

  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(live.dataset.refresh, {
      headers: { "Accept": "text/html", "X-Flowplex-Fragment": "live" }, cache: "no-store"
    })
      .then(function (response) {
        if (!response.ok) { throw new Error(response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html !== live.innerHTML) { live.innerHTML = html; }
        live.dataset.updated = String(Date.now());
        show(true);
      })
      .catch(function () { show(false); })
      .then(function () { busy = false; });
  }

  show(true);
  setInterval(refresh, every);
})();
