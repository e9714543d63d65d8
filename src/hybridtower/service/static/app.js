// hybridtower search page: plain DOM, no framework, no network beyond this server.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form"), input = $("q"), kSel = $("k");
  const statusEl = $("status"), notesEl = $("notes"), grid = $("results");
  const player = $("player"), video = $("player-video"), playerTitle = $("player-title");
  const playerScore = $("player-score"), playerLink = $("player-link"), playerError = $("player-error");
  let seq = 0;  // drops responses of superseded searches

  function setStatus(text, isError) {
    statusEl.textContent = text;
    statusEl.classList.toggle("error", !!isError);
  }

  function showNotes(notes) {
    notesEl.replaceChildren();
    for (const n of notes || []) {
      const li = document.createElement("li");
      li.textContent = n;
      notesEl.appendChild(li);
    }
  }

  function card(hit) {
    const li = document.createElement("li");
    li.className = "card";
    li.dataset.id = String(hit.id);
    li.dataset.videoId = hit.video_id;
    const a = document.createElement("a");
    a.href = hit.video_url;
    a.title = hit.name;
    const img = document.createElement("img");
    img.src = hit.thumbnail_url;
    img.alt = "thumbnail of " + hit.name;
    img.loading = "lazy";
    img.addEventListener("error", () => img.classList.add("broken"));
    const meta = document.createElement("div");
    meta.className = "meta";
    const name = document.createElement("span");
    name.className = "name";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = "#" + hit.rank;
    name.append(rank, document.createTextNode(hit.name));
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    meta.append(name, score);
    a.append(img, meta);
    a.addEventListener("click", (ev) => { ev.preventDefault(); play(hit); });
    li.appendChild(a);
    return li;
  }

  function play(hit) {
    playerError.hidden = true;
    playerTitle.textContent = hit.name;
    playerScore.textContent = "score " + hit.score.toFixed(3);
    playerLink.href = hit.video_url;
    player.hidden = false;
    player.dataset.id = String(hit.id);
    video.src = hit.video_url;
    const p = video.play();
    if (p && p.catch) p.catch(() => {});  // autoplay may be refused; the controls still work
    player.scrollIntoView({ block: "nearest" });
  }

  video.addEventListener("error", () => {
    if (player.hidden) return;
    playerError.hidden = false;
    playerError.textContent = "This browser cannot play this file's format; use \"open file\" to download it.";
  });

  $("player-close").addEventListener("click", closePlayer);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closePlayer(); });
  function closePlayer() {
    video.pause();
    video.removeAttribute("src");
    video.load();
    player.hidden = true;
  }

  async function search(q, k) {
    const my = ++seq;
    setStatus("searching\u2026");
    grid.setAttribute("aria-busy", "true");
    const url = "/search?" + new URLSearchParams({ q: q, k: String(k) }).toString();
    let resp, body;
    try {
      resp = await fetch(url, { headers: { Accept: "application/json" } });
      body = await resp.json();
    } catch (e) {
      if (my !== seq) return;
      grid.removeAttribute("aria-busy");
      setStatus("the server did not answer: " + e, true);
      return;
    }
    if (my !== seq) return;
    grid.removeAttribute("aria-busy");
    if (!resp.ok) {
      grid.replaceChildren();
      showNotes([]);
      setStatus(body && body.detail ? body.detail : "error " + resp.status, true);
      return;
    }
    grid.replaceChildren(...body.hits.map(card));
    showNotes(body.notes);
    const n = body.hits.length;
    setStatus(n + " result" + (n === 1 ? "" : "s") + " of " + body.total_videos + " videos in " +
              Math.round(body.took_ms) + " ms");
    document.body.dataset.searches = String((+document.body.dataset.searches || 0) + 1);
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = input.value;
    const k = kSel.value;
    const params = new URLSearchParams({ q: q, k: k });
    history.replaceState(null, "", "?" + params.toString());
    search(q, k);
  });

  // a shared link (?q=...&k=...) runs its search on load
  const start = new URLSearchParams(location.search);
  if (start.get("k")) {
    for (const opt of kSel.options) if (opt.value === start.get("k")) kSel.value = opt.value;
  }
  if (start.get("q")) {
    input.value = start.get("q");
    search(input.value, kSel.value);
  }
  fetch("/healthz").then((r) => r.json()).then((h) => {
    if (!statusEl.textContent) setStatus(h.videos + " videos indexed" + (h.model_name ? " \u00b7 " + h.model_name : ""));
  }).catch(() => {});
})();
